"""The suite's configuration: one typed, frozen object read from the environment.

Every setting has a default that works on a developer machine, except where a value can only come
from the deployment (database and Redis addresses for `v2x serve`). Bad values fail at start-up with
a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
    """All settings of a v2x process. Build with `Settings.from_env()`."""

    database_url: str | None = None
    redis_url: str | None = None
    bind_host: str = "0.0.0.0"
    ports: Mapping[str, int] = field(default_factory=lambda: dict(SERVICE_PORTS))
    metrics_ports: Mapping[str, int] = field(default_factory=lambda: dict(METRICS_PORTS))
    tls: TlsConfig | None = None
    log_level: str = "INFO"
    grace_s: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    db_pool_size: int = 10
    api_key_cache_s: float = 30.0
    occupancy_default_ttl_s: int = 600
    max_future_skew_s: float = 60.0
    redis_stream_maxlen: int = 200_000

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
        ports = {name: _int(e, f"V2X_{name.upper()}_PORT", port, 0, 65535) for name, port in SERVICE_PORTS.items()}
        metrics = {
            name: _int(e, f"V2X_{name.upper()}_METRICS_PORT", port, 0, 65535) for name, port in METRICS_PORTS.items()
        }
        level = e.get("LOG_LEVEL", defaults.log_level).upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
        database_url = e.get("DATABASE_URL") or None
        if database_url and not database_url.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://")):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        redis_url = e.get("REDIS_URL") or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return cls(
            database_url=normalise_database_url(database_url) if database_url else None,
            redis_url=redis_url,
            bind_host=e.get("V2X_BIND_HOST", defaults.bind_host),
            ports=ports,
            metrics_ports=metrics,
            tls=_tls(e),
            log_level=level,
            grace_s=_float(e, "V2X_GRACE_S", defaults.grace_s, 0, 300),
            max_message_bytes=_int(e, "V2X_MAX_MESSAGE_BYTES", defaults.max_message_bytes, 1024, 64 << 20),
            db_pool_size=_int(e, "V2X_DB_POOL_SIZE", defaults.db_pool_size, 1, 200),
            api_key_cache_s=_float(e, "V2X_API_KEY_CACHE_S", defaults.api_key_cache_s, 0, 3600),
            occupancy_default_ttl_s=_int(e, "V2X_OCCUPANCY_TTL_S", defaults.occupancy_default_ttl_s, 10, 86400),
            max_future_skew_s=_float(e, "V2X_MAX_FUTURE_SKEW_S", defaults.max_future_skew_s, 0, 3600),
            redis_stream_maxlen=_int(e, "V2X_REDIS_STREAM_MAXLEN", defaults.redis_stream_maxlen, 1000, 10**8),
        )


def normalise_database_url(url: str) -> str:
    """SQLAlchemy needs the asyncpg driver named in the URL."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
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


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
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
