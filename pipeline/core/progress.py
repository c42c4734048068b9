"""Console output: progress bars on anything a person waits for (quiet when not on a
terminal or in CI), and native libraries' chatter kept off the terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
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


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``: a wait as a person reads it."""
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


class Steps:
    """Work done in ``total`` steps that a person waits for: after each step one line
    (``what i/n``, the caller's figures, the time so far and the estimated time left), and
    on a terminal a bar below the lines. Steps may finish in any order (parallel workers):
    the estimate is the time per finished step so far times the steps left."""

    def __init__(self, total: int, what: str, out: Callable[[str], None] = print):
        self.total, self.what, self.out = total, what, out
        self.done = 0
        self.start = time.perf_counter()
        self.bar = None
        if interactive() and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=what.split()[-1], leave=False, dynamic_ncols=True)

    def step(self, figures: str = "", postfix: str = "") -> str:
        """One step finished: its line (also returned), the bar moved."""
        self.done += 1
        elapsed = time.perf_counter() - self.start
        line = f"  {self.what} {self.done}/{self.total}" + (f": {figures}" if figures else "")
        line += f"; {duration(elapsed)} elapsed"
        if self.done < self.total:
            line += f", about {duration(elapsed / self.done * (self.total - self.done))} left"
        if self.bar is None:
            self.out(line)
            sys.stdout.flush()  # seen as it happens, also through a pipe or into a log
        else:
            with self.bar.external_write_mode():  # the line above the bar, which stays at the bottom
                self.out(line)
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)
        return line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


# TensorFlow runs with this many threads (intra-op and inter-op), whatever the machine.
# Its sums are split by thread count even under op determinism: the same small model from
# the same seed gets other weights with 2 threads than with 1, while with the count fixed a
# process held to one core and one with both get the same bits (tests/test_model.py). One,
# because it costs nothing here: 10 epochs of the default model took 11.97 s with 1 thread
# and op determinism against 11.47 s as TensorFlow comes (2 threads, no determinism) and
# 11.24 s with 2 threads and determinism, 6.22 / 6.21 / 7.45 CPU s (bench/bench_train.py
# --only-determinism, 2 cores, load 7.0 -> 5.7); and the search runs one trial per core.
# TINYML_TF_THREADS changes it, for measuring what the fixed count costs (bench/bench_train.py).
TF_THREADS = int(os.environ.get("TINYML_TF_THREADS", "1"))
# TensorFlow reads these when it creates its pools, whoever imports it first (keras): set
# here, on the import of this module, which everything of the pipeline imports early.
_THREADS_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
if "tensorflow" not in sys.modules:
    os.environ.update(dict.fromkeys(_THREADS_ENV, str(TF_THREADS)))
_ENV_BEFORE_TENSORFLOW = "tensorflow" not in sys.modules


def import_tensorflow():
    """Import TensorFlow without its start-up notices (absl, oneDNN, CUDA): they say
    nothing about the run, and with ``TF_THREADS`` threads. If the import fails, its
    output is shown with the error."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with quiet_native_stderr(replay_on_error=True):
            import tensorflow  # noqa: F401
    tf = sys.modules["tensorflow"]
    fix_threads(tf)
    return tf


def fix_threads(tf, n: int = TF_THREADS) -> None:
    """TensorFlow's intra-op and inter-op pools at ``n`` threads. Settable until the first
    operation runs; after that, only if they already are (else a RuntimeError names them)."""
    threading = tf.config.threading
    now = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    if now == (n, n):
        return
    try:
        threading.set_intra_op_parallelism_threads(n)
        threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        # 0 is "not set": then the environment variables, set before TensorFlow was imported, gave n.
        if now == (0, 0) and _ENV_BEFORE_TENSORFLOW and all(os.environ.get(k) == str(n) for k in _THREADS_ENV):
            return
        raise RuntimeError(
            f"TensorFlow already runs with {threading.get_intra_op_parallelism_threads()} intra-op / "
            f"{threading.get_inter_op_parallelism_threads()} inter-op threads (0: one per core), not {n}: "
            "training would not be reproducible; import it through pipeline.core.progress.import_tensorflow "
            "before any operation runs") from None
