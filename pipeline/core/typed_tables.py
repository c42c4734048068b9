"""Typed TOML tables into dataclasses, generically: the type check of a value against its
field's annotation, sub-tables, keys that moved or retired, and number ranges. Nothing here
knows the project's keys: ``pipeline.core.config`` declares them and passes its tables in."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.errors import PipelineError


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is dict:
        return "table of " + " = ".join(type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def check_value(where: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        # A number or a keyword ("auto"): the first alternative that accepts the value.
        for alt in typing.get_args(tp):
            try:
                return check_value(where, alt, value)
            except PipelineError:
                continue
        raise PipelineError(f"{where}: expected {type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise PipelineError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return {check_value(f"{where} key", key_tp, k): check_value(f"{where} {k!r}", value_tp, v)
                for k, v in value.items()}
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise PipelineError(f"{where}: expected {type_name(tp)}, got {value!r}")
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field above is one of these
        raise TypeError(tp)
    if not ok:
        raise PipelineError(
            f"{where}: expected {type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _move_old_keys(name: str, table: dict, where: str, moved_keys: dict) -> dict:
    """``table`` (not changed) with each old key of ``moved_keys`` put in its new sub-table."""
    moved = {key: new for (section, key), new in moved_keys.items() if section == name and key in table}
    if not moved:
        return table
    out = {k: v for k, v in table.items() if k not in moved}
    for old, (new_table, new_key) in moved.items():
        sub_name = new_table.split(".", 1)[1]
        sub = out.get(sub_name, {})
        if not isinstance(sub, dict):
            return out  # the sub-table's own check names the wrong type
        if new_key in sub:
            raise PipelineError(f"{where} {old}: also set as [{new_table}] {new_key}",
                                hint=f"keep only [{new_table}] {new_key}, the key's new place")
        out[sub_name] = {**sub, new_key: table[old]}
    return out


def section_from_table(name: str, cls: type, table: Any, source: str, retired: dict, moved: dict):
    """One section (or sub-table, ``name`` dotted: "train.search_space") from its TOML table."""
    where = f"{source}: [{name}]"
    if not isinstance(table, dict):
        raise PipelineError(f"{where}: expected a table, got {type(table).__name__}")
    table = _move_old_keys(name, table, where, moved)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if (name, key) in retired:
            continue
        if key not in known:
            raise PipelineError(
                f"{where} unknown key {key!r}", hint=f"known keys: {', '.join(sorted(known))}"
            )
        if dataclasses.is_dataclass(hints[key]):
            values[key] = section_from_table(f"{name}.{key}", hints[key], value, source, retired, moved)
        else:
            values[key] = check_value(f"{where} {key}", hints[key], value)
    return cls(**values)


@dataclass(frozen=True)
class Range:
    """An interval a number must lie in; ``*_open`` excludes that end."""

    lo: float | None = 0
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    what: str = ""
    """How the message names the interval, when words say it better than bounds."""

    def __contains__(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))

    def __str__(self) -> str:
        if self.what:
            return self.what
        if self.hi is None:
            return f"a number {'>' if self.lo_open else '>='} {self.lo}"
        lo = "" if self.lo is None else f"{self.lo} {'<' if self.lo_open else '<='} "
        return f"{lo}value {'<' if self.hi_open else '<='} {self.hi}"


INT_MAX = 2**31 - 1
"""Largest int any field takes: TensorFlow and the device hold counts, sizes and seeds
in 32 bits, and a larger number is a typo, not a setting."""
DEFAULT_RANGE = Range(0)
"""Every number of this configuration is a count, size, share, rate, duration or
threshold: none is negative. A field that may be negative, or needs a tighter interval,
gets an entry in the config's FIELD_RANGES."""
POSITIVE, AT_LEAST_1 = Range(0, lo_open=True), Range(1)
SHARE, SHARE_BELOW_1, SHARE_OPEN = Range(0, 1), Range(0, 1, hi_open=True), Range(0, 1, True, True, "a share between 0 and 1")

def tables(cfg: Any, sections: typing.Iterable[str]) -> list[tuple[str, Any]]:
    """Every TOML table of the config in file order, by dotted name: each section, then its
    sub-tables ("train", "train.search_space")."""
    out = []

    def visit(name: str, obj: Any) -> None:
        out.append((name, obj))
        for f in dataclasses.fields(obj):
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                visit(f"{name}.{f.name}", getattr(obj, f.name))

    for name in sections:
        visit(name, getattr(cfg, name))
    return out


def keys(table: Any) -> list[dataclasses.Field]:
    """The fields of one table that are keys (not sub-tables)."""
    return [f for f in dataclasses.fields(table) if not dataclasses.is_dataclass(getattr(table, f.name))]


def check_numbers(cfg: Any, sections: typing.Iterable[str], ranges: dict, source: str = "config") -> None:
    """Every int and float field, whatever table declares it: finite, within its Range
    (``ranges``, else DEFAULT_RANGE), ints within INT_MAX, and ``x_min <= x_max`` for
    each such pair. Generic over the dataclasses, so a new field is checked as it lands."""
    fields = [("seed", "seed", cfg.seed)]
    for name, table in tables(cfg, sections):
        fields += [(f"{name}.{f.name}", f"[{name}] {f.name}", getattr(table, f.name)) for f in keys(table)]
    for dotted, label, v in fields:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # strings, booleans, and the non-numeric choices of a union ("auto")
        if isinstance(v, float) and not math.isfinite(v):
            raise PipelineError(f"{source}: {label}: expected a finite number, got {v}")
        rng = ranges.get(dotted, DEFAULT_RANGE)
        if v not in rng or (isinstance(v, int) and abs(v) > INT_MAX):
            limit = f" and at most {INT_MAX}" if isinstance(v, int) and abs(v) > INT_MAX else ""
            raise PipelineError(f"{source}: {label}: expected {rng}{limit}, got {v}")
    for name, section in tables(cfg, sections):
        for f in keys(section):
            if f.name.endswith("_min") and hasattr(section, f.name[:-4] + "_max"):
                lo, hi = getattr(section, f.name), getattr(section, f.name[:-4] + "_max")
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) and lo > hi:
                    raise PipelineError(f"{source}: [{name}] {f.name} = {lo} is above {f.name[:-4]}_max = {hi}")
