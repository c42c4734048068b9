"""Writing artifacts so that nothing is ever half-written.

Every artifact goes to a temporary file in the same directory and is renamed over the
target, so a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
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
