"""Sign-in sessions: an API key exchanged for a random session id (the cookie), kept only in this process' memory.

The key stays on the server: the page never sees it again, it is never in a URL or the page's storage. Each session
has its own CSRF token, which every state-changing request must echo in a header (`X-CSRF-Token`). A restart of the
console signs everyone out, which is the safe way for it to fail.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "v2x_console_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    id: str
    key: str
    role: str  # police, operator, driver, admin, platform, camera
    scope: str  # the operator (or camera) id of a scoped role, else ""
    key_id: str
    csrf: str
    expires_at: float  # time.time()

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionStore:
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def create(self, key: str, role: str, scope: str, key_id: str) -> Session:
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest go first
            for sid in sorted(self._sessions, key=lambda s: self._sessions[s].expires_at)[: MAX_SESSIONS // 10]:
                del self._sessions[sid]
        session = Session(secrets.token_urlsafe(32), key, role, scope, key_id, secrets.token_urlsafe(32),
                          time.time() + self.ttl_s)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= time.time():
            del self._sessions[session_id]
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _expire(self) -> None:
        now = time.time()
        for sid in [s for s, v in self._sessions.items() if v.expires_at <= now]:
            del self._sessions[sid]
