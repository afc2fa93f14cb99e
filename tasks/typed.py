"""Typed configuration: TOML tables turned into dataclasses, every key and type checked.

``from_mapping(TfidfConfig, {"alphas": [1e-5]}, "tfidf")`` returns a ``TfidfConfig``; an
unknown key, a value of the wrong type or a value the dataclass refuses raises ``ConfigError``
naming ``[tfidf] key``. Lists become tuples where the field is a tuple or a sequence, so that
configurations are hashable and compare equal however they were written.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from tasks.errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], raw: Any, section: str) -> T:
    """An instance of dataclass ``cls`` from ``raw`` (a TOML table), validated."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table of settings, got {_type_name(raw)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} in [{section}]: "
            f"{', '.join(unknown)} (known: {', '.join(known)})"
        )
    values = {key: coerce(value, hints[key], f"[{section}] {key}") for key, value in raw.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}]: {exc}") from None


def replace_checked(instance: T, changes: Mapping[str, Any], section: str) -> T:
    """``dataclasses.replace`` with the same checks as ``from_mapping``."""
    current = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance) if f.init}  # type: ignore[arg-type]
    return from_mapping(type(instance), {**current, **changes}, section)


def coerce(value: Any, hint: Any, setting: str) -> Any:
    """``value`` checked against the type ``hint``; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [option for option in options if option is not type(None)]
        if len(real) == 1:
            return coerce(value, real[0], setting)  # its own message says what it expects
        for option in real:
            try:
                return coerce(value, option, setting)
            except ConfigError:
                continue
        raise ConfigError(f"{setting} = {value!r}: expected {_hint_name(hint)}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{setting} = {value!r}: expected one of {list(typing.get_args(hint))}")
        return value
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{setting} = {value!r}: expected nothing")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{setting} = {value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{setting} = {value!r}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{setting} = {value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{setting} = {value!r}: expected a string")
        return value
    if origin in (tuple, list, Sequence, typing.Sequence) or hint in (tuple, list):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{setting} = {value!r}: expected a list")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{setting} = {value!r}: expected a list of {len(args)} values")
            return tuple(coerce(v, a, setting) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        return tuple(coerce(v, item, setting) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{setting} = {value!r}: expected a table")
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        return {
            coerce(k, key_hint, setting): coerce(v, value_hint, f"{setting}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, setting.strip("[]"))  # type: ignore[arg-type]
    return value


def _type_name(value: Any) -> str:
    return type(value).__name__


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          tuple: "a list", list: "a list", dict: "a table", type(None): "nothing"}


def _hint_name(hint: Any) -> str:
    names = []
    for option in typing.get_args(hint):
        option = typing.get_origin(option) or option
        names.append(_NAMES.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(names)
