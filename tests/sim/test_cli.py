"""`v2x sim`'s options reach the simulator's configuration."""

from __future__ import annotations

import pytest

from roadside_sim.__main__ import _config, parser


def test_keep_every_sets_which_frames_are_kept_as_jpeg() -> None:
    every, _ = _config(parser().parse_args(["score", "--key", "k", "--keep-every", "1"]))
    default, _ = _config(parser().parse_args(["score", "--key", "k"]))
    assert (every.keep_every, default.keep_every) == (1, 60)


def test_a_negative_keep_every_is_refused() -> None:
    with pytest.raises(SystemExit, match="keep-every"):
        _config(parser().parse_args(["score", "--key", "k", "--keep-every", "-1"]))
