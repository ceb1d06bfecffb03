"""The settings every v2x process shares, read from the environment, and the readers each service's own settings use.

Each service has its own frozen settings (`services/<name>/settings.py`, `from_env(env)`); a process composes them
at start-up from the environment `Settings` was read from (`Settings.env`), so one mapping configures the whole
process and a test can hand one in. Every setting has a default that works on a developer machine, except where a
value can only come from the deployment (database and Redis addresses for `v2x serve`). Bad values fail at start-up
with a message naming the variable. README.md lists every variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common import fast_paths
from services.common.fast_paths import FastPath

SERVICE_PORTS: Mapping[str, int] = {
    "roadside": 50051,
    "idps": 50052,
    "parking": 50053,
    "charging": 50054,
    "municipal": 50055,
}
METRICS_PORTS: Mapping[str, int] = {name: 9100 + port - 50000 for name, port in SERVICE_PORTS.items()}


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS: certificate and key; with a client CA, clients must present certificates (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


@dataclass(frozen=True)
class Settings:
    """The settings every v2x process shares. Build with `Settings.from_env()`."""

    database_url: str | None = None
    # A streaming replica for reads that may be a little behind (services/common/read_replica.py)
    database_read_url: str | None = None
    read_max_lag_s: float = 2.0
    redis_url: str | None = None
    bind_host: str = "0.0.0.0"
    ports: Mapping[str, int] = field(default_factory=lambda: dict(SERVICE_PORTS))
    metrics_ports: Mapping[str, int] = field(default_factory=lambda: dict(METRICS_PORTS))
    tls: TlsConfig | None = None
    log_level: str = "INFO"
    event_loop: str = "asyncio"  # of the services' processes: "asyncio" (Python's own) or "uvloop"
    grace_s: float = 5.0
    # A client connection is asked to reconnect after this long (0: never), so clients that balance over DNS
    # (round_robin over a headless Service) find pods added since they connected; streams in flight go on.
    max_connection_age_s: float = 300.0
    max_message_bytes: int = 4 * 1024 * 1024
    db_pool_size: int = 10
    api_key_cache_s: float = 30.0
    max_future_skew_s: float = 60.0  # how far in the future an observation's time may be (clock skew)
    redis_stream_maxlen: int = 200_000
    # REDIS_URL names one node of a Redis Cluster (the client finds the others).
    redis_cluster: bool = False
    # Streams per change feed (services/common/redis_streams.Feed): more than one spreads a feed over a cluster.
    feed_shards: int = 1
    # Fast paths this process runs the plain implementation of instead (services/common/fast_paths.py): for the
    # benchmarks' A/B runs, which measure what each fast path saves.
    plain_paths: frozenset[FastPath] = frozenset()
    # The environment these settings were read from: each service reads its own settings from it.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql+asyncpg://user@host:5432/v2x)")
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError("REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)")
        return self.redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        defaults = cls()
        ports = {name: env_int(e, f"V2X_{name.upper()}_PORT", port, 0, 65535) for name, port in SERVICE_PORTS.items()}
        metrics = {
            name: env_int(e, f"V2X_{name.upper()}_METRICS_PORT", port, 0, 65535) for name, port in METRICS_PORTS.items()
        }
        level = e.get("LOG_LEVEL", defaults.log_level).upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
        database_url = e.get("DATABASE_URL") or None
        if database_url and not database_url.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://")):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        database_read_url = e.get("DATABASE_READ_URL") or None
        if database_read_url and not database_read_url.startswith(("postgresql://", "postgresql+asyncpg://",
                                                                   "postgres://")):
            raise ConfigError("DATABASE_READ_URL must be a postgresql:// URL")
        redis_url = e.get("REDIS_URL") or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return cls(
            database_url=normalise_database_url(database_url) if database_url else None,
            database_read_url=normalise_database_url(database_read_url) if database_read_url else None,
            read_max_lag_s=env_float(e, "V2X_READ_MAX_LAG_S", defaults.read_max_lag_s, 0.1, 3600),
            redis_url=redis_url,
            bind_host=e.get("V2X_BIND_HOST", defaults.bind_host),
            ports=ports,
            metrics_ports=metrics,
            tls=_tls(e),
            log_level=level,
            event_loop=env_choice(e, "V2X_EVENT_LOOP", defaults.event_loop, ("uvloop", "asyncio")),
            grace_s=env_float(e, "V2X_GRACE_S", defaults.grace_s, 0, 300),
            max_connection_age_s=env_float(e, "V2X_MAX_CONNECTION_AGE_S", defaults.max_connection_age_s, 0, 86400),
            max_message_bytes=env_int(e, "V2X_MAX_MESSAGE_BYTES", defaults.max_message_bytes, 1024, 64 << 20),
            db_pool_size=env_int(e, "V2X_DB_POOL_SIZE", defaults.db_pool_size, 1, 200),
            api_key_cache_s=env_float(e, "V2X_API_KEY_CACHE_S", defaults.api_key_cache_s, 0, 3600),
            max_future_skew_s=env_float(e, "V2X_MAX_FUTURE_SKEW_S", defaults.max_future_skew_s, 0, 3600),
            redis_stream_maxlen=env_int(e, "V2X_REDIS_STREAM_MAXLEN", defaults.redis_stream_maxlen, 1000, 10**8),
            redis_cluster=env_bool(e, "V2X_REDIS_CLUSTER", defaults.redis_cluster),
            feed_shards=env_int(e, "V2X_FEED_SHARDS", defaults.feed_shards, 1, 256),
            plain_paths=_plain_paths(e),
            env=dict(e),
        )


def normalise_database_url(url: str) -> str:
    """SQLAlchemy needs the asyncpg driver named in the URL."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def env_int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no), not {raw!r}")


def env_choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def env_ws_url(env: Mapping[str, str], name: str) -> str:
    raw = (env.get(name) or "").rstrip("/")
    if raw and not raw.startswith(("ws://", "wss://")):
        raise ConfigError(f"{name} must be a ws:// or wss:// URL, not {raw!r}")
    return raw


def _plain_paths(env: Mapping[str, str]) -> frozenset[FastPath]:
    try:
        return fast_paths.parse(env.get("V2X_PLAIN_PATHS", ""))
    except ValueError as exc:
        raise ConfigError(f"V2X_PLAIN_PATHS: {exc}") from None


def _tls(env: Mapping[str, str]) -> TlsConfig | None:
    cert, key, ca = (env.get(n) or None for n in ("V2X_TLS_CERT", "V2X_TLS_KEY", "V2X_TLS_CLIENT_CA"))
    if not cert and not key:
        if ca:
            raise ConfigError("V2X_TLS_CLIENT_CA needs V2X_TLS_CERT and V2X_TLS_KEY")
        return None
    if not cert or not key:
        raise ConfigError("V2X_TLS_CERT and V2X_TLS_KEY must be set together")
    paths = [Path(cert), Path(key), *([Path(ca)] if ca else [])]
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"TLS file {p} does not exist")
    return TlsConfig(Path(cert), Path(key), Path(ca) if ca else None)
