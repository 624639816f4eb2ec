"""A small keep-alive JSON client on the standard library (one connection per thread)."""

import http.client
import json
import socket
import threading
from typing import Any, Dict, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

from .errors import ChatmemError, ChatmemUnavailable

# A kept-alive connection that the server already closed fails on first use with one of these;
# the request never reached the server, so sending it again on a fresh connection is safe.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.CannotSendRequest)


def seg(value: str) -> str:
    """One URL path segment: user ids may hold spaces, slashes, quotes and non-ASCII letters."""
    return quote(value, safe="")


class HttpClient:
    def __init__(self, base_url: str, timeout: float):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"chatmem url must look like http://127.0.0.1:8737, got {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        self._drop()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Optional[Dict[str, Any]] = None,
        token: Optional[str] = None,
        retry_safe: bool = False,
    ) -> Tuple[int, Any]:
        """Sends one request; answers (status, parsed JSON) for 2xx and 404, raises ChatmemError otherwise."""
        url = self._prefix + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        idempotent = retry_safe or method in ("GET", "PUT", "DELETE")
        for attempt in (0, 1):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._conn()
            try:
                conn.request(method, url, body=payload, headers=headers)
                res = conn.getresponse()
                raw = res.read()
            except socket.timeout as err:
                self._drop()
                raise ChatmemUnavailable("E_TIMEOUT", f"chatmem did not answer {method} {path} within {self.timeout} s") from err
            except _STALE as err:
                self._drop()
                if attempt == 0 and reused and idempotent:
                    continue
                raise ChatmemUnavailable("E_UNREACHABLE", f"chatmem closed the connection during {method} {path}: {err}") from err
            except OSError as err:
                self._drop()
                raise ChatmemUnavailable("E_UNREACHABLE", f"cannot reach chatmem at {self._host}:{self._port}: {err}") from err
            if res.getheader("Connection", "").lower() == "close":
                self._drop()
            return self._parse(method, path, res.status, raw)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _parse(method: str, path: str, status: int, raw: bytes) -> Tuple[int, Any]:
        data: Any = None
        if raw:
            try:
                data = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise ChatmemError("E_BAD_RESPONSE", f"{method} {path} answered {status} with a body that is not JSON", status) from err
        if 200 <= status < 300 or status == 404:
            return status, data
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            raise ChatmemError(str(err.get("code", "E_UNKNOWN")), str(err.get("message", "")), status)
        raise ChatmemError("E_BAD_RESPONSE", f"{method} {path} answered {status}", status)


def error_of(status: int, data: Any, what: str) -> ChatmemError:
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return ChatmemError(str(err.get("code", "E_NOT_FOUND")), str(err.get("message", what)), status)
    return ChatmemError("E_NOT_FOUND", what, status)
