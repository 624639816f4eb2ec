"""chatmem for Python bots: a drop-in for the seed bot's ``MemoryStore`` that talks to a chatmem daemon.

    from chatmem import MemoryStore      # was: from src.convo.memory_store import MemoryStore
    memory = MemoryStore()               # CHATMEM_URL, CHATMEM_API_TOKEN, CHATMEM_ADMIN_TOKEN from the environment
"""

from .errors import ChatmemError, ChatmemUnavailable
from .memory_store import DEFAULT_URL, MemoryStore

__all__ = ["MemoryStore", "ChatmemError", "ChatmemUnavailable", "DEFAULT_URL"]
__version__ = "0.1.0"
