"""The report's building blocks: safe readers of artifact dicts (a missing key reads as n/a,
never a crash), number formatting, and the page blocks the sections return (``P``, ``H``,
``Table``, ``Img``, ``Mark``) that ``render`` turns into HTML and Markdown."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- reading artifacts safely


def g(doc, *keys, default=None):
    """``doc[k1][k2]...``, or ``default`` when a key is missing or a level is not a dict/list."""
    for k in keys:
        if isinstance(doc, dict) and k in doc:
            doc = doc[k]
        elif isinstance(doc, list) and isinstance(k, int) and -len(doc) <= k < len(doc):
            doc = doc[k]
        else:
            return default
    return default if doc is None else doc


def gd(doc, *keys) -> dict:
    v = g(doc, *keys)
    return v if isinstance(v, dict) else {}


def gl(doc, *keys) -> list:
    v = g(doc, *keys)
    return v if isinstance(v, list) else []


def isnum(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def gn(doc, *keys) -> float | None:
    v = g(doc, *keys)
    return v if isnum(v) else None


def num(v, digits: int = 3) -> str:
    if not isnum(v):
        return "n/a"
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


def with_ci(m, key: str, digits: int = 3) -> str:
    """``0.912 [0.884, 0.936]``: the value and its 95% interval, or n/a."""
    value = gn(m, key)
    if value is None:
        return "n/a"
    note = g(m, "uncertainty", "text", key)
    if isinstance(note, str):
        # Few groups (no interval) or no errors (an exact binomial bound), as the metrics say.
        return f"{value:.{digits}f} {note}"
    ci = gl(m, "ci95", key)
    if len(ci) == 2 and all(isnum(c) for c in ci):
        return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return f"{value:.{digits}f}"


def pct(v, digits: int = 1) -> str:
    return f"{v:.{digits}%}" if isnum(v) else "n/a"


def nbytes(v) -> str:
    return f"{int(v):,} B ({v / 1024:,.1f} KiB)" if isnum(v) else "n/a"


def text(v) -> str:
    return "n/a" if v is None or v == "" else str(v)


def ids(values, limit: int = 12) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "") if values else "none"


# --------------------------------------------------------------------------- page blocks


@dataclass
class Mark:
    """A verdict in running text: ``bad``, ``warn``, ``good`` or ``muted``."""

    text: str
    kind: str


@dataclass
class P:
    parts: list  # str or Mark


@dataclass
class H:
    text: str


@dataclass
class Table:
    head: list[str]
    rows: list[list]  # cells: str, Mark, a tuple of them (one line) or a list of them (bullets)
    caption: str = ""
    fold: str = ""  # when set, the table folds away in HTML behind this label


@dataclass
class Img:
    png: bytes
    alt: str


@dataclass
class Section:
    number: int
    anchor: str
    title: str
    blocks: list = field(default_factory=list)


def para(*parts) -> P:
    return P(list(parts))


def not_run(command: str, what: str = "") -> P:
    return para(Mark(f"not run yet: {command}", "muted"), f" ({what})" if what else "")


def verdict(passed, good: str = "ok", bad: str = "FAIL", severity: str = "error") -> Mark:
    if passed is None:
        return Mark("n/a", "muted")
    if passed:
        return Mark(good, "good")
    return Mark(bad, "bad" if severity == "error" else "warn")


def figure(draw, *args, alt: str):
    """A figure, or a line saying why it could not be drawn (a page without one plot beats no page)."""
    try:
        return Img(_drawn(draw, args), alt)
    except Exception as exc:  # matplotlib raises many types on odd data
        return para(Mark(f"figure not drawn ({alt}): {type(exc).__name__}: {exc}", "muted"))


# The report is rebuilt after every stage (train, quantize, flash), and the figures of the
# stages before are the same each time: drawing them again cost about 2 s a figure (10
# figures after train, 20.7 s for the refresh on the shared 2-core machine at load 8-13).
# Within ``figure_cache(dir)`` a figure is kept as ``dir/<key>.png``, the key the hash of the
# drawing function, the source of its module, matplotlib's version and the arguments, so a
# figure is drawn again exactly when anything it is drawn from changes (the same bytes).
FIGURE_CACHE = ".report-figures"
_cache: dict = {"dir": None, "used": set()}


@contextlib.contextmanager
def figure_cache(directory: Path):
    """Figures drawn within are kept in ``directory``; those not drawn this time are removed."""
    _cache.update(dir=Path(directory), used=set())
    try:
        yield
    finally:
        d, used = _cache["dir"], _cache["used"]
        _cache.update(dir=None, used=set())
        if d.is_dir():
            for path in d.glob("*.png"):
                if path.name not in used:
                    path.unlink(missing_ok=True)


def _drawn(draw, args: tuple) -> bytes:
    d = _cache["dir"]
    if d is None:
        return draw(*args)
    try:
        from importlib.metadata import version

        module = sys.modules[draw.__module__]
        key = hashlib.sha256(pickle.dumps(
            (draw.__module__, draw.__qualname__, Path(module.__file__).read_bytes(), version("matplotlib"), args),
            protocol=4)).hexdigest()[:32]
    except Exception:  # noqa: BLE001 - arguments that do not pickle: drawn every time
        return draw(*args)
    path = d / f"{key}.png"
    _cache["used"].add(path.name)
    if path.is_file():
        return path.read_bytes()
    png = draw(*args)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{key}.{os.getpid()}.tmp"
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return png


# What a split keeps whole is a "group" since the keys were renamed; a run from before reads too.


def group_by(doc):
    """What the split kept whole ("group", "recording" or "sample"): ``group_by``, or ``unit``
    in an artifact written before the rename."""
    return g(doc, "group_by", default=g(doc, "unit"))


def group_count(doc):
    """How many groups a metrics dict or a comparison counted: ``groups`` (earlier ``clusters``)."""
    return g(doc, "groups", default=g(doc, "clusters"))


def group_counts(doc) -> dict:
    """Groups per split (train_report.json's ``split``): ``groups`` (earlier ``clusters``)."""
    v = group_count(doc)
    return v if isinstance(v, dict) else {}
