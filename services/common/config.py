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
    event_loop: str = "asyncio"  # of the services' processes: "asyncio" (Python's own) or "uvloop"
    grace_s: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    db_pool_size: int = 10
    api_key_cache_s: float = 30.0
    occupancy_default_ttl_s: int = 600
    max_future_skew_s: float = 60.0
    redis_stream_maxlen: int = 200_000
    # Charging: the OCPP WebSocket gateway and the EV bay checks.
    ocpp_port: int = 9000
    ocpp_public_url: str = ""  # what charge points dial, e.g. wss://ocpp.example.city/ocpp ("" = ws://host:port/ocpp)
    ocpp_heartbeat_s: int = 60
    bay_idle_grace_s: int = 900
    bay_fault_grace_s: int = 60
    bay_check_interval_s: float = 30.0
    # IDPS: a report joins an open incident of a compatible type within this distance and time window.
    idps_correlation_distance_m: float = 100.0
    idps_correlation_window_s: float = 120.0
    # IDPS: a cleared incident can be reopened for this long, then it closes.
    idps_reopen_window_s: float = 300.0
    # IDPS: changes buffered per live subscriber before it is sent a RESYNC instead.
    idps_subscriber_buffer: int = 2000
    # IDPS: length of the incident change stream (the cursors consoles can resume from).
    idps_stream_maxlen: int = 1_000_000
    # Municipal adapter: where it delivers (V2X_MUNICIPAL_DESTINATIONS) and how it drains and retries.
    municipal_destinations: tuple[MunicipalDestination, ...] = ()
    municipal_poll_s: float = 0.2
    municipal_backoff_base_s: float = 0.2
    municipal_backoff_max_s: float = 30.0
    municipal_reconcile_hour: int = 3  # local (UTC+8) hour of the daily reconciliation of yesterday; -1 = off
    # Roadside: per-camera frame queue, micro-batching, frame deadline, and where on-street spot states go
    # (the parking service, with the on-street operator's API key; both unset = spot states not sent).
    roadside_queue_frames: int = 2
    # Frames of several cameras per session.run. Off by default: on this CPU, with one thread per run and two
    # runs at once, batches of 4 gave 0.84 x raw at 4 cameras against 0.94 unbatched (load/bench_roadside.py);
    # a GPU or a many-core host may gain from it.
    roadside_max_batch: int = 1
    roadside_infer_workers: int = 2  # batches in flight at once (one detector session, shared)
    roadside_detector: str = "onnx"  # "sim": the simulator's key-colour detector (demos without cameras)
    roadside_frame_deadline_ms: int = 2000
    roadside_parking_target: str = ""  # host:port of the parking service
    roadside_parking_key: str = field(default="", repr=False)
    roadside_spot_refresh_s: float = 60.0

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
            event_loop=_choice(e, "V2X_EVENT_LOOP", defaults.event_loop, ("uvloop", "asyncio")),
            grace_s=_float(e, "V2X_GRACE_S", defaults.grace_s, 0, 300),
            max_message_bytes=_int(e, "V2X_MAX_MESSAGE_BYTES", defaults.max_message_bytes, 1024, 64 << 20),
            db_pool_size=_int(e, "V2X_DB_POOL_SIZE", defaults.db_pool_size, 1, 200),
            api_key_cache_s=_float(e, "V2X_API_KEY_CACHE_S", defaults.api_key_cache_s, 0, 3600),
            occupancy_default_ttl_s=_int(e, "V2X_OCCUPANCY_TTL_S", defaults.occupancy_default_ttl_s, 10, 86400),
            max_future_skew_s=_float(e, "V2X_MAX_FUTURE_SKEW_S", defaults.max_future_skew_s, 0, 3600),
            redis_stream_maxlen=_int(e, "V2X_REDIS_STREAM_MAXLEN", defaults.redis_stream_maxlen, 1000, 10**8),
            ocpp_port=_int(e, "V2X_OCPP_PORT", defaults.ocpp_port, 0, 65535),
            ocpp_public_url=_ws_url(e, "V2X_OCPP_PUBLIC_URL"),
            ocpp_heartbeat_s=_int(e, "V2X_OCPP_HEARTBEAT_S", defaults.ocpp_heartbeat_s, 1, 86400),
            bay_idle_grace_s=_int(e, "V2X_BAY_IDLE_GRACE_S", defaults.bay_idle_grace_s, 0, 86400),
            bay_fault_grace_s=_int(e, "V2X_BAY_FAULT_GRACE_S", defaults.bay_fault_grace_s, 0, 86400),
            bay_check_interval_s=_float(e, "V2X_BAY_CHECK_INTERVAL_S", defaults.bay_check_interval_s, 0.1, 3600),
            idps_correlation_distance_m=_float(e, "V2X_IDPS_CORRELATION_DISTANCE_M",
                                               defaults.idps_correlation_distance_m, 1, 5000),
            idps_correlation_window_s=_float(e, "V2X_IDPS_CORRELATION_WINDOW_S", defaults.idps_correlation_window_s,
                                             1, 86400),
            idps_reopen_window_s=_float(e, "V2X_IDPS_REOPEN_WINDOW_S", defaults.idps_reopen_window_s, 0, 86400),
            idps_subscriber_buffer=_int(e, "V2X_IDPS_SUBSCRIBER_BUFFER", defaults.idps_subscriber_buffer, 10,
                                        1_000_000),
            idps_stream_maxlen=_int(e, "V2X_IDPS_STREAM_MAXLEN", defaults.idps_stream_maxlen, 1000, 10**8),
            municipal_destinations=municipal_destinations(e),
            municipal_poll_s=_float(e, "V2X_MUNICIPAL_POLL_S", defaults.municipal_poll_s, 0.01, 60),
            municipal_backoff_base_s=_float(e, "V2X_MUNICIPAL_BACKOFF_BASE_S", defaults.municipal_backoff_base_s,
                                            0.001, 60),
            municipal_backoff_max_s=_float(e, "V2X_MUNICIPAL_BACKOFF_MAX_S", defaults.municipal_backoff_max_s,
                                           0.01, 3600),
            municipal_reconcile_hour=_int(e, "V2X_MUNICIPAL_RECONCILE_HOUR", defaults.municipal_reconcile_hour,
                                          -1, 23),
            roadside_queue_frames=_int(e, "V2X_ROADSIDE_QUEUE_FRAMES", defaults.roadside_queue_frames, 1, 100),
            roadside_max_batch=_int(e, "V2X_ROADSIDE_MAX_BATCH", defaults.roadside_max_batch, 1, 64),
            roadside_infer_workers=_int(e, "V2X_ROADSIDE_INFER_WORKERS", defaults.roadside_infer_workers, 1, 16),
            roadside_detector=_choice(e, "V2X_ROADSIDE_DETECTOR", defaults.roadside_detector, ("onnx", "sim")),
            roadside_frame_deadline_ms=_int(e, "V2X_ROADSIDE_FRAME_DEADLINE_MS", defaults.roadside_frame_deadline_ms,
                                            50, 60_000),
            roadside_parking_target=_roadside_parking(e)[0],
            roadside_parking_key=_roadside_parking(e)[1],
            roadside_spot_refresh_s=_float(e, "V2X_ROADSIDE_SPOT_REFRESH_S", defaults.roadside_spot_refresh_s, 1,
                                           3600),
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


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _roadside_parking(env: Mapping[str, str]) -> tuple[str, str]:
    target = (env.get("V2X_ROADSIDE_PARKING_TARGET") or "").strip()
    key = (env.get("V2X_ROADSIDE_PARKING_KEY") or "").strip()
    if bool(target) != bool(key):
        raise ConfigError("V2X_ROADSIDE_PARKING_TARGET and V2X_ROADSIDE_PARKING_KEY must be set together")
    if target and (":" not in target or not target.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"V2X_ROADSIDE_PARKING_TARGET must be host:port, not {target!r}")
    return target, key


def _ws_url(env: Mapping[str, str], name: str) -> str:
    raw = (env.get(name) or "").rstrip("/")
    if raw and not raw.startswith(("ws://", "wss://")):
        raise ConfigError(f"{name} must be a ws:// or wss:// URL, not {raw!r}")
    return raw


MUNICIPAL_PROFILES = ("municipal_json", "datex2_xml", "ngsi_ld")
MUNICIPAL_KINDS = ("lot_static", "lot_dynamic", "spot_status", "passage", "charger_status")
PLATE_POLICIES = ("full", "masked", "hashed", "none")


@dataclass(frozen=True)
class MunicipalDestination:
    """One endpoint of the municipal platform that the adapter delivers to, with its own cursor.

    `rate_limit_rps` is in records per second (0 = unlimited); `kinds` empty = every kind the
    profile carries; `plate_policy` says how plates leave the suite (`full` only over https);
    `coordinate_system` is what the profile writes (WGS84, or GCJ02 for the municipal JSON profile).
    """

    name: str
    url: str
    profile: str
    secret: str = field(repr=False)
    rate_limit_rps: float = 0.0
    batch_size: int = 500
    timeout_s: float = 10.0
    kinds: tuple[str, ...] = ()
    plate_policy: str = "masked"
    coordinate_system: str = "WGS84"
    reconcile_url: str = ""
    start: str = "beginning"
    ca_file: str = ""


def municipal_destinations(env: Mapping[str, str]) -> tuple[MunicipalDestination, ...]:
    """V2X_MUNICIPAL_DESTINATIONS: a JSON list of destinations, or the path of a file holding one.
    A destination's secret comes from `secret`, or from the variable named by `secret_env`."""
    import json

    name = "V2X_MUNICIPAL_DESTINATIONS"
    raw = (env.get(name) or "").strip()
    if not raw:
        return ()
    if not raw.startswith("["):
        path = Path(raw.removeprefix("@"))
        if not path.is_file():
            raise ConfigError(f"{name}: {path} is neither a JSON list nor an existing file")
        raw = path.read_text()
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ConfigError(f"{name} must be a JSON list of destinations")
    out: list[MunicipalDestination] = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object")
        known = {f for f in MunicipalDestination.__dataclass_fields__} | {"secret_env"}
        unknown = set(item) - known
        if unknown:
            raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
        item = dict(item)
        if "secret_env" in item:
            item["secret"] = env.get(str(item.pop("secret_env")), "")
        try:
            d = MunicipalDestination(**{**item, "kinds": tuple(item.get("kinds", ()))})
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        _check_destination(where, d)
        out.append(d)
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{name}: destination names must be unique")
    return tuple(out)


def _check_destination(where: str, d: MunicipalDestination) -> None:
    import re

    problems: list[str] = []
    if not isinstance(d.name, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", d.name):
        problems.append("name must be 1..40 characters of A-Z a-z 0-9 . _ -")
    if not isinstance(d.url, str) or not d.url.startswith(("http://", "https://")):
        problems.append("url must be an http:// or https:// URL")
    if d.profile not in MUNICIPAL_PROFILES:
        problems.append(f"profile must be one of {', '.join(MUNICIPAL_PROFILES)}")
    if not isinstance(d.secret, str) or len(d.secret) < 16:
        problems.append("secret (or the variable named by secret_env) must be at least 16 characters")
    if not isinstance(d.rate_limit_rps, int | float) or not 0 <= d.rate_limit_rps <= 1e6:
        problems.append("rate_limit_rps must be 0 (unlimited) .. 1e6 records/s")
    if not isinstance(d.batch_size, int) or not 1 <= d.batch_size <= 5000:
        problems.append("batch_size must be 1..5000")
    if not isinstance(d.timeout_s, int | float) or not 0.05 <= d.timeout_s <= 300:
        problems.append("timeout_s must be 0.05..300")
    if any(k not in MUNICIPAL_KINDS for k in d.kinds):
        problems.append(f"kinds must be among {', '.join(MUNICIPAL_KINDS)}")
    if d.plate_policy not in PLATE_POLICIES:
        problems.append(f"plate_policy must be one of {', '.join(PLATE_POLICIES)}")
    elif d.plate_policy == "full" and not str(d.url).startswith("https://"):
        problems.append("plate_policy full needs an https:// url (plates never travel in clear text)")
    if d.coordinate_system not in ("WGS84", "GCJ02"):
        problems.append("coordinate_system must be WGS84 or GCJ02")
    elif d.coordinate_system == "GCJ02" and d.profile != "municipal_json":
        problems.append("GCJ02 is only for the municipal_json profile (DATEX II and NGSI-LD are WGS-84)")
    if d.reconcile_url and not str(d.reconcile_url).startswith(("http://", "https://")):
        problems.append("reconcile_url must be an http:// or https:// URL")
    if d.start not in ("beginning", "now"):
        problems.append("start must be beginning or now")
    if d.ca_file and not Path(d.ca_file).is_file():
        problems.append(f"ca_file {d.ca_file} does not exist")
    if problems:
        raise ConfigError(f"{where} ({d.name}): " + "; ".join(problems))


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
