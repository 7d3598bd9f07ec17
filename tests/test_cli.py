"""`streamchat serve` flags come from the settings and a bad value fails before any model loads."""

from __future__ import annotations

import argparse

import pytest

from streamchat.cli import main, settings_from_args


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "not-a-port"],
        ["serve", "--max-num-seqs", "0"],
        ["serve", "--ping-interval", "-1"],
        ["serve", "--sampling-defaults", "temp=0.7"],
    ],
)
def test_bad_setting_exits_2_naming_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    flag = argv[1].removeprefix("--").replace("-", "_")
    assert f"invalid setting {flag}=" in err and repr(argv[2]) in err


def test_unknown_choice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--engine", "nope"])
    assert info.value.code == 2
    assert "--engine" in capsys.readouterr().err


def test_the_auth_throttle_flag_takes_none_to_switch_it_off() -> None:
    for value, expected in (("none", None), ("off", None), ("7", 7)):
        args = argparse.Namespace(auth_failures_per_minute=value)
        assert settings_from_args(args).auth_failures_per_minute == expected
