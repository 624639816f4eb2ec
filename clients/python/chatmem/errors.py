from typing import Optional


class ChatmemError(Exception):
    """An error answered by the daemon (``code`` is chatmem's stable error code, ``status`` the HTTP status)."""

    def __init__(self, code: str, message: str, status: Optional[int] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ChatmemUnavailable(ChatmemError):
    """The daemon could not be reached or did not answer in time (``E_UNREACHABLE``, ``E_TIMEOUT``)."""
