"""The IDPS service's own settings (services/idps/settings.py)."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.idps.settings import IdpsSettings


def test_idps_correlation_windows_are_read_from_the_environment() -> None:
    s = IdpsSettings.from_env({"V2X_IDPS_CORRELATION_DISTANCE_M": "30", "V2X_IDPS_CORRELATION_WINDOW_S": "20.5"})
    assert (s.correlation_distance_m, s.correlation_window_s) == (30.0, 20.5)
    defaults = IdpsSettings.from_env({"V2X_IDPS_CORRELATION_DISTANCE_M": "", "V2X_IDPS_CORRELATION_WINDOW_S": ""})
    assert (defaults.correlation_distance_m, defaults.correlation_window_s) == (100.0, 120.0)


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
        IdpsSettings.from_env({name: raw})
    assert str(err.value) == message
