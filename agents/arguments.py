"""argparse types and checks shared by the `mnms` command and the benchmark scripts: each error
names the flag's bad value and what it accepts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0, or an error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int >= 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0, or an error naming the value."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1, or an error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int >= 1")
    return value


def distinct(parser: argparse.ArgumentParser, name: str, values: Sequence[Any] | None) -> None:
    """Refuse a list option that repeats a value (a repeated seed would count its run twice)."""
    if values is not None and len(set(values)) != len(values):
        parser.error(f"{name} repeats a value: {list(values)}")


def seed_int(text: str) -> int:
    """argparse type: a seed, an int in [0, 2**32) (what numpy and torch take)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int in [0, 2**32)")
    return value
