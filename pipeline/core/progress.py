"""Console output: progress bars on anything a person waits for (quiet when not on a
terminal or in CI), and native libraries' chatter kept off the terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it"):
    """A tqdm bar on a terminal; the bare iterable otherwise."""
    if not interactive():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)


@contextlib.contextmanager
def quiet_native_stderr(replay_on_error: bool = False):
    """Keep what C++ libraries write to fd 2 (TensorFlow's absl logging, XNNPACK notices)
    off the terminal. With ``replay_on_error``, a failing block shows what was caught."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            except BaseException:
                os.dup2(saved, 2)
                if replay_on_error:
                    sink.seek(0)
                    sys.stderr.write(sink.read().decode("utf-8", "replace"))
                raise
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_tensorflow():
    """Import TensorFlow without its start-up notices (absl, oneDNN, CUDA): they say
    nothing about the run. If the import fails, its output is shown with the error."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with quiet_native_stderr(replay_on_error=True):
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]
