"""Typed, validated configuration from TOML tables.

Each recipe section is a frozen dataclass; `from_table` checks every key against the
dataclass fields and their types, so a typo or a wrong type becomes a UserError naming the
file, the key and the fix instead of a silent default or a traceback later on.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

from builder.errors import UserError

T = TypeVar("T")


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list or origin is tuple:
        return f"a list of {describe(get_args(tp)[0])}"
    if origin is dict:
        return "a table of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            type(None): "absent"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            if arg is type(None):
                continue
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, None
    if origin is typing.Literal:
        return (value in get_args(tp)), value
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            return False, None
        inner = get_args(tp)[0]
        out = []
        for item in value:
            ok, conv = _coerce(item, inner)
            if not ok:
                return False, None
            out.append(conv)
        return True, tuple(out)
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return False, None
        return True, dict(value)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, None
    if tp is str:
        return isinstance(value, str), value
    if tp is Any:
        return True, value
    return False, None


def from_table(cls: type[T], table: Any, *, file: Path | str, where: str) -> T:
    """Build dataclass `cls` from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise UserError(f"{file}: [{where}] must be a table, got {type(table).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise UserError(
            f"{file}: unknown key {where}.{unknown[0]}.{did_you_mean(unknown[0], fields)} "
            f"Known keys in [{where}]: {', '.join(sorted(fields))}. Fix the spelling or remove it."
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(
                    f"{file}: missing key {where}.{name} ({describe(hints[name])}). Add it."
                )
            continue
        ok, value = _coerce(table[name], hints[name])
        if not ok:
            raise UserError(
                f"{file}: {where}.{name} must be {describe(hints[name])}, "
                f"got {table[name]!r}. Fix the value."
            )
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except ValueError as exc:
        raise UserError(f"{file}: [{where}] {exc}") from None
    return obj


def did_you_mean(word: str, known: typing.Iterable[str]) -> str:
    """" Did you mean 'x'?" for the closest known name (a typo: `licence`, `sample_per_shard`),
    or "" when none is close; case and `-`/`_` are ignored."""
    import difflib

    def norm(text: str) -> str:
        return text.lower().replace("-", "_")

    by_norm = {norm(k): k for k in known}
    close = difflib.get_close_matches(norm(word), list(by_norm), n=1, cutoff=0.6)
    return f" Did you mean {by_norm[close[0]]!r}?" if close else ""


def check_http_url(value: str, *, file: Path | str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(
            f"{file}: {key} = {value!r} is not an http(s) URL. "
            "Give a full URL such as https://commons.wikimedia.org/w/api.php."
        )
    return value


def resolve_path(value: str, *, base: Path, file: Path | str, key: str, must_exist: bool = True,
                 kind: str = "any") -> Path:
    given = Path(value).expanduser()  # a leading ~, as a shell would have expanded it
    path = given if given.is_absolute() else base / given
    if must_exist and not path.exists():
        raise UserError(
            f"{file}: {key} = {value!r}: no such file or directory ({path}). "
            "Paths in a recipe are relative to the recipe file; fix the path."
        )
    if must_exist and kind == "file" and not path.is_file():
        raise UserError(f"{file}: {key} = {value!r} is not a file ({path}).")
    if must_exist and kind == "dir" and not path.is_dir():
        raise UserError(f"{file}: {key} = {value!r} is not a directory ({path}).")
    return path
