"""Frozen configuration dataclasses and the one way overrides reach them.

Every family describes a model with a frozen dataclass. `zoo.build(name, **overrides)` calls
`apply_overrides(config, overrides)`, which checks names and types against the dataclass and
then calls `dataclasses.replace`, so the family's `__post_init__` validates the values. Nothing
is popped silently: an unknown key is a `TypeError` that lists the accepted ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union


def accepted_overrides(config) -> list[str]:
    """Names that `zoo.build` accepts as overrides for `config`, sorted."""
    return sorted(field.name for field in dataclasses.fields(config) if field.init)


def unused_fields(config) -> dict[str, str]:
    """Fields that `config` ignores as it stands, each with the reason (Fast R-CNN's `fc_units`
    with a ResNet head).

    A config class returns them from an `unused_fields()` method; most have none. `zoo.describe`
    leaves them out of the defaults and `apply_overrides` refuses to set them.
    """
    method = getattr(config, "unused_fields", None)
    return dict(method()) if method is not None else {}


def apply_overrides(config, overrides: dict[str, Any], *, model_name: str):
    """Return `config` with `overrides` applied, after checking their names and types.

    Raises:
      TypeError: an override that the config does not have, or a value of the wrong type.
      ValueError: from the config's own validation, for a value out of its accepted range, or
        an override of a field that the resulting config ignores (`unused_fields`).
    """
    accepted = accepted_overrides(config)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TypeError(
            f"{model_name}: unknown override(s) {', '.join(map(repr, unknown))}; "
            f"accepted overrides are: {', '.join(accepted)}"
        )
    hints = typing.get_type_hints(type(config))
    coerced = {}
    for key, value in overrides.items():
        ok, value = _coerce(value, hints[key])
        if not ok:
            raise TypeError(
                f"{model_name}: override {key!r} expects {describe_type(hints[key])}, "
                f"got {type(value).__name__} {value!r}"
            )
        coerced[key] = value
    result = dataclasses.replace(config, **coerced)
    ignored = unused_fields(result)
    given = sorted(set(coerced) & set(ignored))
    if given:
        raise ValueError(
            f"{model_name}: override(s) {', '.join(map(repr, given))} do nothing in this configuration: "
            + "; ".join(f"{key}: {ignored[key]}" for key in given)
        )
    return result


def config_to_dict(config) -> dict[str, Any]:
    """The config's fields as plain Python values (tuples become lists), for JSON."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def describe_type(hint) -> str:
    """A short human description of a type hint, for error messages."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {describe_type(args[0])}"
        return "a tuple (" + ", ".join(describe_type(a) for a in args) + ")"
    return getattr(hint, "__name__", str(hint))


def _coerce(value, hint) -> tuple[bool, Any]:
    """Check `value` against `hint`; lists are accepted where a tuple is expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, value
    if origin is Literal:
        # `True == 1`, so compare types too: Literal[1, 2] must not accept True.
        return any(value == arg and type(value) is type(arg) for arg in args), value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, coerced = _coerce(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(item, args[0]) for item in value]
        elif len(args) != len(value):
            return False, value
        else:
            items = [_coerce(item, arg) for item, arg in zip(value, args)]
        if not all(ok for ok, _ in items):
            return False, value
        return True, tuple(item for _, item in items)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    raise NotImplementedError(f"config type {hint!r} is not supported by apply_overrides")
