"""The IDPS service's own settings: correlation windows, reopening, live subscriptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import env_float, env_int


@dataclass(frozen=True)
class IdpsSettings:
    # A report joins an open incident of a compatible type within this distance and time window.
    correlation_distance_m: float = 100.0
    correlation_window_s: float = 120.0
    # A cleared incident can be reopened for this long, then it closes.
    reopen_window_s: float = 300.0
    # Changes buffered per live subscriber before it is sent a RESYNC instead.
    subscriber_buffer: int = 2000
    # Length of the incident change stream (the cursors consoles can resume from).
    stream_maxlen: int = 1_000_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IdpsSettings:
        d = cls()
        return cls(
            correlation_distance_m=env_float(env, "V2X_IDPS_CORRELATION_DISTANCE_M", d.correlation_distance_m, 1,
                                             5000),
            correlation_window_s=env_float(env, "V2X_IDPS_CORRELATION_WINDOW_S", d.correlation_window_s, 1, 86400),
            reopen_window_s=env_float(env, "V2X_IDPS_REOPEN_WINDOW_S", d.reopen_window_s, 0, 86400),
            subscriber_buffer=env_int(env, "V2X_IDPS_SUBSCRIBER_BUFFER", d.subscriber_buffer, 10, 1_000_000),
            stream_maxlen=env_int(env, "V2X_IDPS_STREAM_MAXLEN", d.stream_maxlen, 1000, 10**8),
        )
