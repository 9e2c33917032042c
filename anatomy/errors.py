"""Bad input: the one exception type, and the type check every config node passes before it is built.

    check_types("intervention", FeatureSteering, {"coefficient": "abc"})
    # AnatomyError: config intervention.coefficient: expected a number (float), got 'abc' (str)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping


class AnatomyError(ValueError):
    """Bad input or configuration, detected before expensive work; the message says what to fix."""


_NAMES = {bool: "true or false", int: "a whole number (int)", float: "a number (float)", str: "a string",
          list: "a list", dict: "a mapping", type(None): "null"}


def check_types(node: str, target: type, values: Mapping) -> None:
    """Raise an AnatomyError naming `node.key` if a value does not have its dataclass field's type.

    A float field takes an int (`threshold=1`); an int field takes no float and no bool; `X | None`
    takes null. Fields typed with anything other than bool, int, float, str, list[...], dict[...] and
    unions of them are not checked. Keys that are not fields are left to the constructor's own error.
    """
    if not dataclasses.is_dataclass(target):
        return
    hints = typing.get_type_hints(target)
    for key, value in values.items():
        if key in hints and (bad := _mismatch(value, hints[key], f"{node}.{key}" if node else key)):
            where, hint, got = bad
            raise AnatomyError(f"config {where}: expected {_describe(hint)}, got {got!r} ({type(got).__name__})")


def _mismatch(value, hint, where: str) -> tuple[str, object, object] | None:
    """(where, expected type, value) of the first part of `value` that does not have type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        fits = [_mismatch(value, arg, where) for arg in args]
        if any(f is None for f in fits):
            return None
        # The value is of one member's kind but wrong inside (a bad item of `list[float] | None`): name that item.
        inner = [f for f, arg in zip(fits, args) if f[1] is not arg]
        return inner[0] if len(inner) == 1 else (where, hint, value)
    if hint is list or origin is list:
        if not isinstance(value, (list, tuple)):
            return where, hint, value
        return next((bad for i, v in enumerate(value)
                     if args and (bad := _mismatch(v, args[0], f"{where}[{i}]"))), None)
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            return where, hint, value
        return next((bad for k, v in value.items() if args and (
            bad := _mismatch(k, args[0], f"{where} key {k!r}") or _mismatch(v, args[1], f"{where}.{k}"))), None)
    return None if _fits(value, hint) else (where, hint, value)


def _fits(value, hint) -> bool:
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # a type this check does not know: the constructor validates it


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin in (list, dict):
        return f"{_NAMES[origin]} ({hint})"
    return _NAMES.get(hint, str(hint))
