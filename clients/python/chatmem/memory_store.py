"""``MemoryStore`` with the seed bot's constructor, methods, return values and side effects, over chatmem's HTTP API.

Every call is one request to the daemon; the daemon makes each change atomic and durable before it answers.
Where the seed destroyed memory without a trace, this class goes through chatmem's guarded operations:
``clear(uid)`` and ``reset_all()`` need the admin token and leave a verified backup, and
``truncate_history`` backs up the turns it drops.
"""

import os
import sys
import uuid
from typing import Any, Dict, List, Optional

from ._http import HttpClient, error_of, seg
from .errors import ChatmemError

DEFAULT_URL = "http://127.0.0.1:8737"

# The fields the seed's update() would set (its UserRecord attributes); others it ignored silently.
_UPDATABLE = ("session_token", "name", "gender", "product", "serial", "address", "summary_context", "last_answer", "flags", "slots", "updated_at", "last_step")

# The seed's product inference (ensure_product_from_text), kept as it was so answers do not change.
_PRODUCTS = (("eac", "Electronic Air Cleaner"), ("electronic air cleaner", "Electronic Air Cleaner"))
_SERIALS = ("f57a", "f90a")


def _entry_id() -> str:
    """A client-side id per turn: a retried append of the same turn is then a no-op on the server."""
    return uuid.uuid4().hex[:16]


class MemoryStore:
    """The seed's ``MemoryStore``, backed by a chatmem daemon.

    ``path`` and ``autosave`` are accepted for compatibility and ignored: the daemon stores every change
    durably before it answers. ``max_history`` must equal the daemon's ``historyCap`` (checked on first use).
    """

    def __init__(
        self,
        path: str = "data/storage/memory.json",
        autosave: bool = True,
        max_history: int = 50,
        debug: bool = False,
        *,
        url: Optional[str] = None,
        api_token: Optional[str] = None,
        admin_token: Optional[str] = None,
        timeout: float = 10.0,
    ):
        self.path = path
        self.autosave = autosave
        self.max_history = int(max_history)
        self.debug = bool(debug)
        self.url = url or os.environ.get("CHATMEM_URL") or DEFAULT_URL
        self.api_token = api_token if api_token is not None else os.environ.get("CHATMEM_API_TOKEN") or None
        self.admin_token = admin_token if admin_token is not None else os.environ.get("CHATMEM_ADMIN_TOKEN") or None
        self._http = HttpClient(self.url, timeout)
        self._checked_cap = False
        if self.debug:
            self._log(f"using chatmem at {self.url}")

    # -- plumbing ---------------------------------------------------------------------------------------

    def _log(self, msg: str) -> None:
        # The seed printed tokens here; this never prints tokens or message text.
        print(f"[MemoryStore] {msg}", file=sys.stderr)

    def _check_cap(self) -> None:
        if self._checked_cap:
            return
        _, health = self._http.request("GET", "/healthz")
        cap = health.get("historyCap") if isinstance(health, dict) else None
        if isinstance(cap, int) and cap != self.max_history:
            raise ValueError(
                f"max_history={self.max_history} but the chatmem daemon at {self.url} keeps {cap} turns per user; "
                f"pass max_history={cap} or start the daemon with historyCap {self.max_history}"
            )
        self._checked_cap = True

    def _call(self, method: str, path: str, *, body: Any = None, query: Optional[Dict[str, Any]] = None, admin: bool = False, retry_safe: bool = False) -> Any:
        self._check_cap()
        token = self.admin_token if admin else (self.api_token or self.admin_token)
        if admin and not token:
            raise ChatmemError("E_ADMIN_TOKEN", "this call deletes memory and needs the admin token: set CHATMEM_ADMIN_TOKEN or pass admin_token=")
        status, data = self._http.request(method, path, body=body, query=query, token=token, retry_safe=retry_safe)
        if status == 404:
            raise error_of(status, data, f"{method} {path}: not found")
        return data

    def _user(self, uid: str) -> str:
        if not isinstance(uid, str):
            raise TypeError(f"user id must be a str, got {type(uid).__name__}")
        return "/v1/users/" + seg(uid)

    def _fields(self, uid: str, *names: str) -> Dict[str, Any]:
        return self._call("GET", self._user(uid), query={"ensure": "true", "fields": ",".join(names)})

    def _patch(self, uid: str, patch: Dict[str, Any]) -> Dict[str, Any]:
        return self._call("PATCH", self._user(uid), body=patch)

    def close(self) -> None:
        """Closes this thread's kept-alive connection (the seed's class had nothing to close)."""
        self._http.close()

    # -- Section 1: core --------------------------------------------------------------------------------

    def set_debug(self, flag: bool) -> None:
        self.debug = bool(flag)

    def stats(self) -> Dict[str, Any]:
        s = self._call("GET", "/v1/stats")
        return {"total_users": s["users"], "total_messages": s["messages"], "last_updated": s.get("lastUpdate") or "N/A"}

    def get(self, uid: str) -> Dict[str, Any]:
        """The user's record; an unknown user is created, as the seed did."""
        return self._call("GET", self._user(uid), query={"ensure": "true"})

    def update(self, uid: str, patch: Dict[str, Any]) -> Dict[str, Any]:
        """Appends ``patch["history"]`` entries (those with role and text) and sets the other known fields."""
        record: Optional[Dict[str, Any]] = None
        entries = []
        for h in patch.get("history") or []:
            if isinstance(h, dict) and "role" in h and "text" in h:
                entry = {"role": h["role"], "text": h["text"], "id": h.get("id") or _entry_id()}
                if h.get("ts"):
                    entry["ts"] = h["ts"]
                entries.append(entry)
        if entries:
            record = self._call("POST", self._user(uid) + "/history", body=entries, retry_safe=True)
        fields = {k: v for k, v in patch.items() if k in _UPDATABLE}
        for name in ("flags", "slots"):
            if name in fields:
                # The seed replaced the whole dict; chatmem patches merge key by key, so removed keys are sent as null.
                new = fields[name] if isinstance(fields[name], dict) else {}
                current = (record or self.get(uid)).get(name) or {}
                fields[name] = {**{k: None for k in current if k not in new}, **new}
        if fields:
            record = self._patch(uid, fields)
        return record if record is not None else self.get(uid)

    def clear(self, uid: str) -> None:
        """Deletes the user through chatmem's guarded delete: a verified backup first. Needs the admin token."""
        try:
            self._call("DELETE", self._user(uid), admin=True)
        except ChatmemError as err:
            if err.code != "E_UNKNOWN_USER":
                raise

    def reset_all(self) -> None:
        """Clears every user through chatmem's guarded clear: a verified full backup first. Needs the admin token."""
        self._call("POST", "/v1/admin/clear", body={"confirm": "YES"}, admin=True)

    # -- Section 2: history -----------------------------------------------------------------------------

    def append_history(self, uid: str, role: str, text: str, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"role": role, "text": (text or "").strip(), "id": _entry_id()}
        if meta:
            entry["meta"] = dict(meta)
        return self._call("POST", self._user(uid) + "/history", body=entry, retry_safe=True)

    def get_history(self, uid: str) -> List[Dict[str, Any]]:
        return list(self._fields(uid, "history")["history"] or [])

    def get_chat_context(self, uid: str, n: int = 30) -> str:
        history = self.get_history(uid)
        if not history:
            return "(belum ada percakapan)"
        return "\n".join(f"[{h.get('ts')}] {h.get('role', 'user').capitalize()}: {h.get('text', '').strip()}" for h in history[-n:])

    def truncate_history(self, uid: str, keep_last: int = 5) -> Dict[str, Any]:
        """Keeps the newest ``keep_last`` turns; the dropped ones go to a per-user backup first."""
        self.get(uid)
        # The seed sliced history[-keep_last:], and history[-0:] is the whole list.
        keep = int(keep_last)
        if keep <= 0:
            keep = len(self.get_history(uid)) if keep == 0 else max(0, len(self.get_history(uid)) + keep)
        return self._call("POST", self._user(uid) + "/history/truncate", body={"keepLast": keep})["record"]

    def export_chat_history(self, uid: str, n: int = 50) -> List[Dict[str, Any]]:
        r = self._fields(uid, "history", "created_at")
        return [
            {"timestamp": h.get("ts"), "role": h.get("role"), "text": h.get("text"), "user_id": uid, "session_id": r["created_at"]}
            for h in (r["history"] or [])[-n:]
        ]

    def flush_history(self, uid: str) -> None:
        """Nothing to flush: the daemon made every change durable before it answered."""
        return None

    # -- Section 3: context -----------------------------------------------------------------------------

    def add_context_entry(self, uid: str, text: str, max_items: int = 15) -> Dict[str, Any]:
        s = (text or "").strip()
        if not s:
            return self.get(uid)
        body: Dict[str, Any] = {"text": s, "maxItems": max_items}
        body.update(self._infer(s))
        return self._call("POST", self._user(uid) + "/context", body=body)

    # -- Section 4: identity, flags, state ----------------------------------------------------------------

    def set_flag(self, uid: str, key: str, value: Any) -> Dict[str, Any]:
        if self.debug:
            self._log(f"set_flag {key}")
        return self._call("PUT", self._user(uid) + "/flags/" + seg(key), body={"value": value})

    def clear_flag(self, uid: str, key: str) -> Dict[str, Any]:
        self.get(uid)
        return self._call("DELETE", self._user(uid) + "/flags/" + seg(key))

    def get_flag(self, uid: str, key: str, default: Any = None) -> Any:
        r = self._call("GET", self._user(uid) + "/flags/" + seg(key), query={"ensure": "true"})
        return r["value"] if r["found"] else default

    def set_name(self, uid: str, name: str) -> Dict[str, Any]:
        return self._patch(uid, {"name": name.strip().title()})

    def set_gender(self, uid: str, gender: str) -> Dict[str, Any]:
        return self._patch(uid, {"gender": gender.lower()})

    def set_product(self, uid: str, product: str) -> Dict[str, Any]:
        return self._patch(uid, {"product": product.strip()})

    def set_last_step(self, uid: str, step: str) -> Dict[str, Any]:
        return self._patch(uid, {"last_step": step})

    def get_identity(self, uid: str) -> Dict[str, Any]:
        r = self._fields(uid, "name", "gender", "product", "address")
        return {"name": r["name"], "gender": r["gender"], "product": r["product"], "address": r["address"]}

    # -- Section 5: slots -------------------------------------------------------------------------------

    def get_slots(self, uid: str) -> Dict[str, Any]:
        return dict(self._fields(uid, "slots")["slots"] or {})

    def get_slot(self, uid: str, key: str, default: Any = None) -> Any:
        r = self._call("GET", self._user(uid) + "/slots/" + seg(key), query={"ensure": "true"})
        return r["value"] if r["found"] else default

    def set_slot(self, uid: str, key: str, value: Any) -> Dict[str, Any]:
        return self._call("PUT", self._user(uid) + "/slots/" + seg(key), body={"value": value})

    def fill_slots(self, uid: str, new_slots: Dict[str, Any]) -> Dict[str, Any]:
        return self._call("POST", self._user(uid) + "/slots", body={"values": dict(new_slots)})

    def clear_slots(self, uid: str) -> Dict[str, Any]:
        current = self.get_slots(uid)
        if not current:
            return self.get(uid)
        return self._patch(uid, {"slots": {k: None for k in current}})

    # -- Section 6: product inference, last messages, session token -----------------------------------------

    @staticmethod
    def _infer(text: str) -> Dict[str, Any]:
        low = text.lower()
        out: Dict[str, Any] = {}
        for key, name in _PRODUCTS:
            if key in low:
                out["product"] = name
                break
        serials = [s.upper() for s in _SERIALS if s in low]
        if serials:
            out["serials"] = serials
        return out

    def ensure_product_from_text(self, uid: str, text: str) -> None:
        found = self._infer(text)
        if found:
            self._call("POST", self._user(uid) + "/context", body=found)

    def get_last_bot_message(self, uid: str) -> Optional[str]:
        for h in reversed(self.get_history(uid)):
            if h.get("role") == "assistant" and h.get("text"):
                return h.get("text")
        return None

    def get_last_user_answer(self, uid: str) -> Optional[str]:
        return self._fields(uid, "last_answer")["last_answer"]

    def refresh_session_token(self, uid: str) -> str:
        r = self._call("POST", self._user(uid) + "/session-token")
        if self.debug:
            self._log(f"session token refreshed for one user")
        return r["session_token"]

    # -- Section 7: search ------------------------------------------------------------------------------

    def search(self, keyword: str) -> List[Dict[str, Any]]:
        """Records whose product, summary or chat text contains ``keyword`` (case-insensitive), as the seed."""
        q = keyword.lower().strip()
        if not q:
            # The seed's empty keyword matched every record that has a product, summary entry or turn.
            raise ValueError("search keyword must not be empty")
        # The server also matches ids, names and addresses; keep only the seed's matches.
        items = self._call("GET", "/v1/search", query={"q": q, "limit": 1000})["items"]
        out = []
        for item in items:
            rec = self.get(item["user_id"])
            if (
                q in (rec.get("product") or "").lower()
                or any(q in s.lower() for s in rec.get("summary_context") or [])
                or any(q in (h.get("text") or "").lower() for h in rec.get("history") or [])
            ):
                out.append(rec)
        return out
