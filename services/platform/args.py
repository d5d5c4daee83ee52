"""Argument types shared by the `unifier` subcommands: argparse turns their
ArgumentTypeError into "unifier …: error: argument --x: <message>" and exit 2."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """Bad command-line input discovered after parsing (exit 2)."""


def _whole(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {raw!r}") from None


def positive_int(raw: str) -> int:
    value = _whole(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(raw: str) -> int:
    value = _whole(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
