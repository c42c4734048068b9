"""Writing artifacts so that nothing is ever half-written.

Every artifact goes to a temporary file in the same directory and is renamed over the
target, so a reader sees the old file or the new one, never a torn one.

Two files are appended in place instead, one JSON line at a time: ``device_eval.jsonl``
(one line per window the device answered, so a stopped evaluation resumes without
redoing a window) and ``test_ledger.jsonl`` (one line per look at the test set, which
must never be rewritten away). Rewriting them whole at each line would cost a copy of
the file per line; ``append_line`` writes each line with one ``write`` and fsyncs it, and
``read_json_lines`` drops a torn last line (a writer killed mid-line) and says so.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path: str | os.PathLike, exc: OSError, kept: str = ""):
    """An OSError while writing ``path`` as the one-line PipelineError: a full disk, a
    read-only or missing folder, a quota; ``kept`` says what is safe."""
    from pipeline.core.errors import PipelineError

    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = "free some space and run the stage again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    return PipelineError(f"{path}: cannot write ({reason}){'; ' + kept if kept else ''}", hint=hint)


_TMP_RE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp|\.(?P<old>.+)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temporary files a killed writer of ``folder/name`` left behind.

    A temporary carries its writer's process id; one whose process is gone is stale (a
    live writer's file, another process's or this one's, is left alone).
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".{glob.escape(name)}.*.tmp"):
        m = _TMP_RE.fullmatch(p.name)
        if not m or (m["name"] or m["old"]) != name:
            continue
        if m["pid"] is not None and _alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22  # another user's live process (or a pid no kernel hands out)
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    Temporaries a killed writer left beside ``path`` go first; a write that fails for the
    disk (full, read-only) is a PipelineError naming ``path``, and the old file stays.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        # mkstemp makes the file private (0600); an artifact gets the usual mode, as open() would.
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        raise write_error(path, exc, "the previous version, if any, is unchanged" if path.exists() else "") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    # NumPy scalars and arrays reach reports often; write them as plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, to_json(obj))


def read_json(path: str | os.PathLike, what: str | None = None) -> Any:
    """Read a JSON artifact; a missing or malformed file is a PipelineError naming it."""
    from pipeline.core.errors import PipelineError

    path = Path(path)
    if not path.exists():
        raise PipelineError(
            f"{path}: not found{f' ({what})' if what else ''}",
            hint="run the stage that writes it first (make train, make quantize)",
        )
    from pipeline.core.safe_io import read_json_file

    return read_json_file(path, what)  # bounded depth: a tampered artifact is one error line


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# What each stage of a run writes that a later stage reads, in the stages' order. A stage
# that makes new results removes what every later stage made from the old ones, so that
# neither make (file targets) nor the report can pair a new model with an old evaluation
# (the stage contract, pipeline.core.stage). Reports go too: a quantize report of a model
# that no longer exists would be read as this model's.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "audit": ("splits.json", "audit.json"),
    "train": ("float.keras", "train_report.json"),
    "quantize": ("int8.tflite", "int8.rejected.tflite", "quantize_report.json", "firmware/model_data.h",
                 "firmware/model_data.cc", "firmware/model_settings.h"),
    "flash": ("device_report.json",),
}


def remove_downstream(run_dir: str | os.PathLike, stage: str) -> list[Path]:
    """Remove the outputs of every stage after ``stage`` (see STAGE_OUTPUTS); the removed paths."""
    order = list(STAGE_OUTPUTS)
    removed = []
    for later in order[order.index(stage) + 1:]:
        for name in STAGE_OUTPUTS[later]:
            path = Path(run_dir) / name
            if path.exists():
                path.unlink()
                removed.append(path)
    return removed


# ------------------------------------------------------------------------------ appended files


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class JsonLines:
    """What ``read_json_lines`` found: each whole line's value with its line number, and
    the torn last line it dropped (``torn``: 0 or 1)."""

    records: list[tuple[int, Any]] = field(default_factory=list)
    torn: int = 0


def read_json_lines(path: str | os.PathLike, *, warn: Callable[[str], None] | None = _stderr,
                    max_depth: int | None = None, cut: bool = False, hint: str = "delete that line") -> JsonLines:
    """The JSON lines of an appended file (see the module's doc); a missing file has none.

    The last line is torn when it has no newline at its end or is not valid JSON (a kill,
    a power cut, a full disk mid-line): it is dropped, with one line to ``warn`` saying so,
    and with ``cut`` removed from the file (a writer about to append does that, so the torn
    piece never ends up between two whole lines). Any other line that is not JSON is a
    PipelineError naming the file and the line (``hint``: what to do about it): only the
    end of a file can be torn.
    """
    from pipeline.core.errors import PipelineError
    from pipeline.core.safe_io import MAX_JSON_DEPTH, loads_json

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JsonLines()
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = data.split(b"\n")  # the piece after the last newline: b"" when the file ends whole
    found, torn_at, why, whole_end = JsonLines(), None, "", len(data)
    if lines[-1].strip():
        torn_at, why, whole_end = len(lines), "no newline at its end", len(data) - len(lines[-1])
    offset = 0
    for lineno, line in enumerate(lines[:-1], start=1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            found.records.append((lineno, loads_json(line, f"{path}: line {lineno}", max_depth or MAX_JSON_DEPTH)))
        except PipelineError as exc:
            if torn_at is not None or lineno != len(lines) - 1 or "nested" in exc.message:
                raise PipelineError(exc.message, hint="only the last line of an appended file can be torn (its writer "
                                    f"stopped mid-line): this one was edited or damaged; {hint}") from None
            torn_at, why, whole_end = lineno, "not valid JSON", start
    if torn_at is not None:
        found.torn = 1
        if cut:
            with open(path, "r+b") as f:
                f.truncate(whole_end)
        if warn:
            warn(f"warning: {path}: line {torn_at} is torn ({why}: its writer was stopped mid-line); "
                 + ("cut from the file" if cut else "dropped"))
    return found


def append_line(path: str | os.PathLike, obj: Any, kept: str = "",
                warn: Callable[[str], None] | None = _stderr) -> None:
    """Append ``obj`` to ``path`` as one JSON line: one ``write`` of the whole encoded line
    (O_APPEND), then fsync, so a kill leaves the line whole or absent. A short write (a full
    disk, a file-size limit) is undone and raised as the PipelineError naming ``path``
    (``kept``: what is safe); a torn last line a killed writer left is cut first, said."""
    line = (json.dumps(obj, default=_json_default, allow_nan=False) + "\n").encode("utf-8")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_error(path, exc, kept) from None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            whole = _whole_lines_end(fd, size)
            os.ftruncate(fd, whole)
            if warn:
                warn(f"warning: {path}: its last line was torn ({size - whole} bytes without a newline: "
                     "its writer was stopped mid-line); cut before appending")
            size = whole
        written = os.write(fd, line)
        if written < len(line):
            try:  # the rest: raises the kernel's reason (ENOSPC, EFBIG), or completes the line
                written += os.write(fd, line[written:])
            finally:
                if written < len(line):
                    os.ftruncate(fd, size)  # no torn line left behind
            if written < len(line):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)
    except OSError as exc:
        raise write_error(path, exc, kept) from None
    finally:
        os.close(fd)


def _whole_lines_end(fd: int, size: int, block: int = 1 << 16) -> int:
    """The offset just after the last newline of the open file ``fd`` (0 without one)."""
    end = size
    while end > 0:
        start = max(0, end - block)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0
