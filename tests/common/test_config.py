"""Config: one frozen object from the environment; bad values fail fast, naming the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.common.config import ConfigError, Settings


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.ports["parking"] == 50053 and s.ports["roadside"] == 50051 and s.ports["municipal"] == 50055
    assert s.tls is None and s.database_url is None


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).log_level = "DEBUG"  # type: ignore[misc]


def test_database_url_gets_the_async_driver() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://u@h:5432/db"})
    assert s.database_url == "postgresql+asyncpg://u@h:5432/db"


@pytest.mark.parametrize(("env", "named"), [
    ({"V2X_PARKING_PORT": "abc"}, "V2X_PARKING_PORT"),
    ({"V2X_PARKING_PORT": "70000"}, "V2X_PARKING_PORT"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ({"V2X_TLS_CERT": "/nope.pem"}, "V2X_TLS_KEY"),
    ({"V2X_TLS_CLIENT_CA": "/ca.pem"}, "V2X_TLS_CLIENT_CA"),
    ({"V2X_OCCUPANCY_TTL_S": "5"}, "V2X_OCCUPANCY_TTL_S"),
])
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_missing_tls_file_fails(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.from_env({"V2X_TLS_CERT": str(tmp_path / "missing.pem"), "V2X_TLS_KEY": str(key)})


def test_serve_needs_a_database_url() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env({}).require_database_url()


def test_idps_correlation_windows_are_read_from_the_environment() -> None:
    s = Settings.from_env({"V2X_IDPS_CORRELATION_DISTANCE_M": "30", "V2X_IDPS_CORRELATION_WINDOW_S": "20.5"})
    assert (s.idps_correlation_distance_m, s.idps_correlation_window_s) == (30.0, 20.5)
    defaults = Settings.from_env({"V2X_IDPS_CORRELATION_DISTANCE_M": "", "V2X_IDPS_CORRELATION_WINDOW_S": ""})
    assert (defaults.idps_correlation_distance_m, defaults.idps_correlation_window_s) == (100.0, 120.0)


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("V2X_IDPS_CORRELATION_DISTANCE_M", "30m", "V2X_IDPS_CORRELATION_DISTANCE_M must be a number, not '30m'"),
    ("V2X_IDPS_CORRELATION_DISTANCE_M", "0", "V2X_IDPS_CORRELATION_DISTANCE_M must be between 1 and 5000, not 0.0"),
    ("V2X_IDPS_CORRELATION_DISTANCE_M", "nan", "V2X_IDPS_CORRELATION_DISTANCE_M must be between 1 and 5000, not nan"),
    ("V2X_IDPS_CORRELATION_WINDOW_S", "-20", "V2X_IDPS_CORRELATION_WINDOW_S must be between 1 and 86400, not -20.0"),
    ("V2X_IDPS_CORRELATION_WINDOW_S", "inf", "V2X_IDPS_CORRELATION_WINDOW_S must be between 1 and 86400, not inf"),
    ("V2X_IDPS_CORRELATION_WINDOW_S", "2 min", "V2X_IDPS_CORRELATION_WINDOW_S must be a number, not '2 min'"),
])
def test_bad_idps_correlation_windows_fail_with_a_message_naming_the_variable(name: str, raw: str,
                                                                               message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({name: raw})
    assert str(err.value) == message
