"""argparse types and checks shared by the `mnms` command and the benchmark scripts: each error
names the flag's bad value and what it accepts."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def _number(kind: type, accepts: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    """An argparse type: `kind(text)` where `accepts` it, else an error naming the text."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not accepts(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    return parse


non_negative_int = _number(int, lambda v: v >= 0, "an int >= 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")  # NaN is refused
positive_int = _number(int, lambda v: v >= 1, "an int >= 1")
seed_int = _number(int, lambda v: 0 <= v < 2**32, "an int in [0, 2**32)")
"""A seed: what numpy and torch take."""


def distinct(parser: argparse.ArgumentParser, name: str, values: Sequence[Any] | None) -> None:
    """Refuse a list option that repeats a value (a repeated seed would count its run twice)."""
    if values is not None and len(set(values)) != len(values):
        parser.error(f"{name} repeats a value: {list(values)}")
