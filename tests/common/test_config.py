"""Config: the shared settings, frozen, from the environment; bad values fail fast, naming the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.common.config import ConfigError, Settings
from services.common.fast_paths import FastPath


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
    ({"V2X_PLAIN_PATHS": "driver-reads,warp-drive"}, "V2X_PLAIN_PATHS"),
])
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_plain_paths_name_fast_paths_to_turn_off() -> None:
    assert Settings.from_env({}).plain_paths == frozenset()
    assert Settings.from_env({"V2X_PLAIN_PATHS": " spliced-answers "}).plain_paths == {FastPath.SPLICED_ANSWERS}
    assert Settings.from_env({"V2X_PLAIN_PATHS": "all"}).plain_paths == frozenset(FastPath)


def test_missing_tls_file_fails(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.from_env({"V2X_TLS_CERT": str(tmp_path / "missing.pem"), "V2X_TLS_KEY": str(key)})


def test_serve_needs_a_database_url() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env({}).require_database_url()


def test_v2x_run_refuses_a_bad_setting_of_any_service_before_it_starts_anything() -> None:
    from services.registry import check_settings

    check_settings({})
    for env, named in [({"V2X_OCCUPANCY_TTL_S": "5"}, "V2X_OCCUPANCY_TTL_S"),
                       ({"V2X_IDPS_SUBSCRIBER_BUFFER": "many"}, "V2X_IDPS_SUBSCRIBER_BUFFER"),
                       ({"V2X_OCPP_PUBLIC_URL": "http://x"}, "V2X_OCPP_PUBLIC_URL"),
                       ({"V2X_ROADSIDE_QUEUE_FRAMES": "0"}, "V2X_ROADSIDE_QUEUE_FRAMES"),
                       ({"V2X_MUNICIPAL_DESTINATIONS": "[1]"}, "V2X_MUNICIPAL_DESTINATIONS")]:
        with pytest.raises(ConfigError, match=named):
            check_settings(env)


def test_each_process_reads_its_services_settings_from_the_environment_it_was_configured_with() -> None:
    from services.parking.settings import ParkingSettings

    s = Settings.from_env({"V2X_OCCUPANCY_TTL_S": "120"})
    assert ParkingSettings.from_env(s.env).occupancy_default_ttl_s == 120
    assert "V2X_OCCUPANCY_TTL_S" not in repr(s)
