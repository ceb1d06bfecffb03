"""The console's settings: defaults that work on a developer machine, bad values refused naming the variable."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.console.settings import DISTRICT_NET, ConsoleSettings, require_session_redis


def test_defaults_reach_the_services_on_this_host() -> None:
    s = ConsoleSettings.from_env({"V2X_IDPS_PORT": "51000"})
    assert s.port == 8080 and s.public_key == "" and s.session_ttl_s == 8 * 3600 and not s.secure_cookie
    assert s.sessions == "redis"  # replicas share them; `memory` only when asked for
    assert s.targets["idps"] == "127.0.0.1:51000" and s.targets["parking"] == "127.0.0.1:50053"
    assert s.district_net == str(DISTRICT_NET) and DISTRICT_NET.is_file()


@pytest.mark.parametrize(("env", "names"), [
    ({"V2X_CONSOLE_PORT": "http"}, "V2X_CONSOLE_PORT"),
    ({"V2X_CONSOLE_PORT": "70000"}, "V2X_CONSOLE_PORT"),
    ({"V2X_CONSOLE_SESSION_TTL_S": "5"}, "V2X_CONSOLE_SESSION_TTL_S"),
    ({"V2X_CONSOLE_SECURE_COOKIE": "maybe"}, "V2X_CONSOLE_SECURE_COOKIE"),
    ({"V2X_CONSOLE_PUBLIC_KEY": "secret"}, "V2X_CONSOLE_PUBLIC_KEY"),
    ({"V2X_CONSOLE_PARKING_TARGET": "parking"}, "V2X_CONSOLE_PARKING_TARGET"),
    ({"V2X_CONSOLE_DISTRICT_NET": "/no/such/net.xml"}, "V2X_CONSOLE_DISTRICT_NET"),
    ({"V2X_CONSOLE_SESSIONS": "cookie"}, "V2X_CONSOLE_SESSIONS"),
])
def test_a_bad_value_is_refused_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        ConsoleSettings.from_env(env)


def test_sessions_in_redis_need_redis_url_and_sessions_in_memory_do_not() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL is not set: the console keeps its sessions in Redis"):
        require_session_redis(ConsoleSettings.from_env({}), None)
    require_session_redis(ConsoleSettings.from_env({}), "redis://valkey:6379/0")
    require_session_redis(ConsoleSettings.from_env({"V2X_CONSOLE_SESSIONS": "memory"}), None)
