"""Parsing files nobody here made: caps and checks that turn hostile input into one error.

Every helper raises `PipelineError` naming the file (and the field or member) for input it
refuses, and never anything else, so a loader built on them fails with the one line the CLI
promises instead of a traceback: a JSON file nested deeper than the interpreter's stack, a
400-digit integer where a float belongs, an NPZ member whose header claims terabytes, a CSV
cell beyond the csv module's field limit, a path that climbs out of its folder.
"""

from __future__ import annotations

import csv
import json
import math
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError

MAX_JSON_DEPTH = 100
"""Deepest nesting of arrays and objects a JSON file may have. Edge Impulse acquisition
files and ``info.labels`` nest 4 deep; every artifact of this project at most 5. Python's
decoder recurses once per level and overflows its stack near 1000, so 100 refuses nothing
real and leaves the stack far from its end (cbor2 caps CBOR at 400 itself)."""

MAX_DEFLATE_RATIO = 1032
"""Deflate's best compression ratio (zlib's technical notes: 1032:1). An NPZ member that
claims to expand further than this from the bytes it occupies is lying about its size."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text, brackets inside strings not counted."""
    bare = _JSON_STRING.sub(b"", data)
    arr = np.frombuffer(bare, dtype=np.uint8)
    opens = (arr == ord("[")) | (arr == ord("{"))
    closes = (arr == ord("]")) | (arr == ord("}"))
    idx = np.flatnonzero(opens | closes)
    if idx.size == 0:
        return 0
    return int(np.cumsum(np.where(opens[idx], 1, -1)).max())


def loads_json(data: bytes | str, source: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON text, refusing (with a PipelineError naming ``source``) what is not JSON,
    not UTF-8, nested deeper than ``max_depth`` or holding an integer too long to convert."""
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = data
        try:
            data = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PipelineError(f"{source}: not valid JSON (not UTF-8: {exc})") from None
    depth = json_depth(raw)
    if depth > max_depth:
        raise PipelineError(f"{source}: refused: JSON nested {depth} deep, more than the {max_depth} allowed")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an over-long integer
        raise PipelineError(f"{source}: not valid JSON ({exc})") from None


def read_file_bytes(path: str | Path, where: str | None = None) -> bytes:
    """The bytes of a regular file; a missing file, a folder, a name too long or a file
    that cannot be read is a PipelineError naming it (``where``, else the path)."""
    where = where or str(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise PipelineError(f"{where}: does not exist") from None
    except (OSError, ValueError) as exc:  # a folder, EACCES, ENAMETOOLONG, an embedded NUL
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PipelineError(f"{where}: cannot be read ({reason})") from None


def resolved(path: Path) -> Path | None:
    """``path.resolve()``, or None for a path no file can have (an embedded NUL, a loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def read_json_file(path: str | Path, what: str | None = None) -> Any:
    """Read and decode a JSON file; a missing, unreadable or malformed file is a PipelineError."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: not found{f' ({what})' if what else ''}")
    return loads_json(read_file_bytes(path), str(path))


def finite_number(value: Any, where: str, *, positive: bool = False) -> float:
    """``value`` as a finite float; anything else (bools, text, NaN, infinities, integers too
    large for a float) is a PipelineError naming ``where``."""
    expected = "a positive number" if positive else "a finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PipelineError(f"{where}: expected {expected}, got {_short(value)}")
    try:
        f = float(value)
    except OverflowError:
        raise PipelineError(f"{where}: expected {expected}, got an integer too large for a float ({_short(value)})") from None
    if not math.isfinite(f) or (positive and not f > 0):
        raise PipelineError(f"{where}: expected {expected}, got {_short(value)}")
    return f


def finite_rows(rows: list[list], where: str) -> np.ndarray:
    """Rows of numbers as a float64 array; integers too large for a float, or non-finite
    values, are a PipelineError naming the row."""
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (OverflowError, ValueError, TypeError):
        for k, row in enumerate(rows):
            for v in row:
                finite_number(v, f"{where}[{k}]")
        raise PipelineError(f"{where}: expected rows of numbers") from None
    if not np.all(np.isfinite(arr)):
        k = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise PipelineError(f"{where}[{k}]: NaN or infinite value")
    return arr


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {len(str(abs(value))) if value.bit_length() < 14000 else 'thousands of'} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_inside(folder: Path, relative: str, where: str) -> Path:
    """``folder / relative``, refused unless it resolves inside ``folder`` (no ``../``
    escape, no absolute path, no symlink that leads out)."""
    base = folder.resolve()
    try:
        target = (folder / relative).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise PipelineError(f"{where}: path {relative!r} cannot be resolved ({exc})") from None
    if target != base and base not in target.parents:
        raise PipelineError(
            f"{where}: path {relative!r} resolves to {target}, outside the export folder {base}",
            hint="paths in info.labels must stay inside the export folder",
        )
    return folder / relative


# --------------------------------------------------------------------------- CSV


def csv_rows(text: str, source: str) -> Iterator[list[str]]:
    """``csv.reader`` over ``text``; a malformed line (a field over the csv module's limit,
    a NUL byte) is a PipelineError naming the line, the limit being the honest cap."""
    reader = csv.reader(text.splitlines())
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise PipelineError(
                f"{source}: line {reader.line_num}: not valid CSV ({exc})",
                hint=f"a field may hold at most {csv.field_size_limit()} characters",
            ) from None
        yield row


# --------------------------------------------------------------------------- NPZ


def load_npz_arrays(path: str | Path, known: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickles and without trusting its headers.

    Each member's ``.npy`` header (shape and dtype) is checked against the bytes the
    member holds, and the member's size against the bytes it occupies in the archive,
    before anything is allocated: a header claiming terabytes is refused, not attempted.
    Object arrays (pickles), bad CRCs, a ``.npy`` renamed ``.npz`` and other damage are a
    PipelineError naming the file and member. With ``known``, a member not in it is
    refused before any member is read.
    """
    path = Path(path)
    src = str(path)
    try:
        size = path.stat().st_size
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise PipelineError(f"{src}: a single .npy array, not an .npz archive", hint="save the arrays with numpy.savez(path, X=..., y=...)") from None
        raise PipelineError(f"{src}: not a readable .npz file (not a zip archive)") from None
    except OSError as exc:
        raise PipelineError(f"{src}: cannot read ({exc.strerror or exc})") from None
    out: dict[str, np.ndarray] = {}
    with zf:
        members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in zf.infolist()}
        unknown = set(members) - set(known) if known is not None else set()
        if unknown:
            raise PipelineError(f"{src}: unknown arrays {sorted(unknown)}", hint=f"known: {sorted(known)}")
        for key, info in members.items():
            out[key] = _read_member(zf, info, size, f"{src}: array {key!r}")
    return out


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int, where: str) -> np.ndarray:
    fmt = np.lib.format
    if info.compress_size > archive_size:
        raise PipelineError(f"{where}: the archive says it occupies {info.compress_size} bytes, the file has {archive_size}")
    limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else info.compress_size * MAX_DEFLATE_RATIO + 1024
    if info.file_size > limit:
        raise PipelineError(f"{where}: the archive claims {info.file_size} bytes from {info.compress_size} stored; damaged or hostile")
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise PipelineError(f"{where}: unsupported .npy format version {version}")
            if dtype.hasobject:
                raise PipelineError(
                    f"{where}: holds Python objects (dtype {dtype}), which load only by running a pickle; refused",
                    hint="save numbers or fixed-width strings (numpy.str_), not object arrays",
                )
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            header = f.tell()
            if nbytes != info.file_size - header:
                raise PipelineError(
                    f"{where}: header declares shape {shape} of {dtype} ({nbytes} bytes), "
                    f"the member holds {info.file_size - header} bytes"
                )
            data = f.read(nbytes)  # bounded above by the checks: at most ~1000x the file
            if len(data) != nbytes:
                raise PipelineError(f"{where}: truncated: {len(data)} of {nbytes} bytes")
    except PipelineError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, SyntaxError, TypeError,
            NotImplementedError, RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise PipelineError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


# --------------------------------------------------------------------------- artifact structure

NUMBER = (int, float)


def check_structure(value: Any, schema: Any, where: str, field: str = "") -> None:
    """Refuse a decoded artifact whose structure is not ``schema``: a type (or tuple of
    types) to match, a dict of keys to schemas (a key ending in ``?`` may be absent), or a
    one-element list meaning "a list of these". The error names the field and what was
    expected; ``bool`` never passes for a number."""
    label = f"field '{field}'" if field else "the top level"
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise PipelineError(f"{where}: {label}: expected an object, got {_type_name(value)}")
        for key, sub in schema.items():
            optional = key.endswith("?")
            key = key.rstrip("?")
            if key not in value:
                if optional:
                    continue
                raise PipelineError(f"{where}: {label}: missing key {key!r}")
            check_structure(value[key], sub, where, f"{field}.{key}" if field else key)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise PipelineError(f"{where}: {label}: expected a list, got {_type_name(value)}")
        for k, item in enumerate(value):
            check_structure(item, schema[0], where, f"{field}[{k}]")
    else:
        types = schema if isinstance(schema, tuple) else (schema,)
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise PipelineError(f"{where}: {label}: expected {names}, got {_type_name(value)} {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise PipelineError(f"{where}: {label}: expected a finite number, got {value}")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", type(None): "null", bool: "a boolean"}.get(
        type(value), type(value).__name__)
