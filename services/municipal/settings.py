"""The municipal adapter's own settings: where it delivers (V2X_MUNICIPAL_DESTINATIONS) and how it drains, retries
and reconciles."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import ConfigError, env_float, env_int

MUNICIPAL_PROFILES = ("municipal_json", "datex2_xml", "ngsi_ld")
MUNICIPAL_KINDS = ("lot_static", "lot_dynamic", "spot_status", "passage", "charger_status", "charger_static")
PLATE_POLICIES = ("full", "masked", "hashed", "none")
# The colours of services.municipal.vocab.PLATE_COLOURS (kept here so that reading the settings imports no vocabulary).
PLATE_COLOURS = ("PLATE_COLOUR_BLUE", "PLATE_COLOUR_YELLOW", "PLATE_COLOUR_GREEN", "PLATE_COLOUR_WHITE",
                 "PLATE_COLOUR_BLACK", "PLATE_COLOUR_OTHER")


@dataclass(frozen=True)
class MunicipalDestination:
    """One endpoint of the municipal platform that the adapter delivers to, with its own cursor.

    `rate_limit_rps` is in records per second (0 = unlimited); `kinds` empty = every kind the
    profile carries; `plate_policy` says how plates leave the suite (`full` only over https);
    `coordinate_system` is what the profile writes (WGS84, or GCJ02 for the municipal JSON profile);
    `plate_colour_codes` numbers plate colours for this destination (municipal JSON), over the default table
    (police and toll platforms number colours differently).
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
    plate_colour_codes: Mapping[str, int] = field(default_factory=dict)


def municipal_destinations(env: Mapping[str, str]) -> tuple[MunicipalDestination, ...]:
    """V2X_MUNICIPAL_DESTINATIONS: a JSON list of destinations, or the path of a file holding one.
    A destination's secret comes from `secret`, or from the variable named by `secret_env`."""
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
    codes = d.plate_colour_codes
    if not isinstance(codes, Mapping) or any(k not in PLATE_COLOURS for k in codes) or any(
            isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in codes.values()):
        problems.append(f"plate_colour_codes must map colours ({', '.join(PLATE_COLOURS)}) to codes 0..255")
    if d.ca_file and not Path(d.ca_file).is_file():
        problems.append(f"ca_file {d.ca_file} does not exist")
    if problems:
        raise ConfigError(f"{where} ({d.name}): " + "; ".join(problems))


@dataclass(frozen=True)
class MunicipalSettings:
    destinations: tuple[MunicipalDestination, ...] = ()
    poll_s: float = 0.2
    backoff_base_s: float = 0.2
    backoff_max_s: float = 30.0
    reconcile_hour: int = 3  # local (UTC+8) hour of the daily reconciliation of yesterday; -1 = off
    # How long delivered outbox rows are kept (hours; 0 = for ever): the horizon of a replay from a time. At least two
    # days, since the daily reconciliation counts yesterday's rows. A city writes ~10 GB of them a day.
    outbox_retention_h: int = 168
    prune_interval_s: float = 600.0  # how often the rows past the retention are deleted

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MunicipalSettings:
        d = cls()
        return cls(
            destinations=municipal_destinations(env),
            poll_s=env_float(env, "V2X_MUNICIPAL_POLL_S", d.poll_s, 0.01, 60),
            backoff_base_s=env_float(env, "V2X_MUNICIPAL_BACKOFF_BASE_S", d.backoff_base_s, 0.001, 60),
            backoff_max_s=env_float(env, "V2X_MUNICIPAL_BACKOFF_MAX_S", d.backoff_max_s, 0.01, 3600),
            reconcile_hour=env_int(env, "V2X_MUNICIPAL_RECONCILE_HOUR", d.reconcile_hour, -1, 23),
            outbox_retention_h=_retention(env, d.outbox_retention_h),
            prune_interval_s=env_float(env, "V2X_MUNICIPAL_PRUNE_INTERVAL_S", d.prune_interval_s, 1, 86400),
        )


def _retention(env: Mapping[str, str], default: int) -> int:
    hours = env_int(env, "V2X_MUNICIPAL_OUTBOX_RETENTION_H", default, 0, 10 * 365 * 24)
    if 0 < hours < 48:
        raise ConfigError("V2X_MUNICIPAL_OUTBOX_RETENTION_H must be 0 (keep every row) or at least 48 hours (the daily "
                          f"reconciliation counts yesterday's rows), not {hours}")
    return hours
