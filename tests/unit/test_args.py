"""A bad command line prints what is wrong and exits 2 (CONTRACT: the `unifier` command
line), before anything connects anywhere."""

import argparse
from collections.abc import Callable

import pytest

from services.platform.args import non_negative_int, positive_int, positive_seconds
from services.runtime.cli import main


@pytest.mark.parametrize(
    ("parse", "raw", "reason"),
    [
        (positive_int, "0", "must be at least 1"),
        (positive_int, "x", "must be a whole number, got 'x'"),
        (non_negative_int, "-1", "must not be negative"),
        (non_negative_int, "1.5", "must be a whole number, got '1.5'"),
        (positive_seconds, "0", "must be more than 0"),
        (positive_seconds, "soon", "must be a number of seconds, got 'soon'"),
    ],
)
def test_argument_types_refuse_with_the_reason(parse: Callable[[str], float], raw: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=reason):
        parse(raw)


def test_argument_types_take_good_values() -> None:
    assert (positive_int("3"), non_negative_int("0"), positive_seconds("0.5")) == (3, 0, 0.5)


def test_i17_a_negative_mu_limit_is_refused_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["channel", "configure", "ch", "--mu-limit", "-1"])
    assert stopped.value.code == 2
    assert "--mu-limit: must not be negative" in capsys.readouterr().err
