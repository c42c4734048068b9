"""Where the search's trials run: ``sequential`` (one after another in this process) or
``ray`` (Ray tasks: an embedded local Ray with the machine's cores, or an existing cluster
when ``RAY_ADDRESS`` or ``[train] ray_address`` is set).

``choose_engine`` picks one from what is known before any trial runs (see its rule).

An engine runs ``trial(task, data)`` for each task and gives back one record per task, in
task order, whatever finished first; a trial that raised is recorded as failed, and Ctrl-C
leaves the tasks not run recorded as stopped. Both engines give the same records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.progress import Steps, import_tensorflow, quiet_native_stderr
from pipeline.ml.model import ModelParams


@dataclass(frozen=True)
class TrialTask:
    index: int
    params: ModelParams
    source: str  # "config", "random", "seed" or "fold"
    epochs: int
    seed: int
    cost: bool = True  # convert to int8 and measure the device cost
    of: int | None = None  # a fold: the search trial whose configuration it fits (the finals)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# One CPU per trial: TensorFlow runs with one thread (pipeline.core.progress.TF_THREADS,
# fixed so that the same seed gives the same weights anywhere), so one trial per core
# keeps the cores busy without oversubscribing them.
TRIAL_CPUS = 1
CONNECT_TIMEOUT_S = 5.0


def trial_line(record: dict) -> str:
    """A finished task's figures, for its progress line."""
    status = record.get("status")
    if record.get("source") == "fold":
        figures = (f"held out {', '.join(record.get('held_out') or [])}: balanced accuracy "
                   f"{record['balanced_accuracy']:.3f}" if status == "ok" else f"{status}: {record.get('error')}")
        return figures if record.get("of") is None else f"trial {record['of']}, {figures}"
    name = {"seed": f"seed {record.get('seed')}",
            "block": f"{record.get('block')} front end"}.get(record.get("source"), f"trial {record.get('trial')}")
    figures = f"{name} {status}"
    if record.get("val_score") is not None:
        figures = f"{name} val {record['val_score']:.3f} ({record.get('epochs')} epochs)"
    device = record.get("device")
    if device:
        figures += f", RAM {device['ram_bytes']:,} B, latency {device['latency_ms']:.2f} ms"
    if status in ("failed", "over_budget"):
        figures += f" [{status.replace('_', ' ')}: {record.get('error') or '; '.join(record.get('over_budget', []))}]"
    return figures


class TrialSteps:
    """One line per finished trial (score, RAM, latency, elapsed, ETA) and, on a terminal, a
    bar with the best validation score so far."""

    def __init__(self, total: int, desc: str, out):
        self.best: dict | None = None
        self.steps = Steps(total, desc, out)

    def done(self, record: dict) -> None:
        # The best trial: a seed fit of the configured model (or a fold) is not a trial.
        trial = record.get("status") == "ok" and record.get("val_score") is not None and record.get("source") != "seed"
        if trial and (self.best is None or record["val_score"] > self.best["val_score"]):
            self.best = record
        figures = trial_line(record)
        best = f"best {self.best['val_score']:.3f} (trial {self.best['trial']})" if self.best else ""
        self.steps.step(figures, postfix=best)

    def close(self) -> None:
        self.steps.close()


def ray_address(tc) -> str | None:
    """The cluster to run on: ``[train] ray_address``, else ``RAY_ADDRESS``; None: embedded."""
    return (tc.ray_address or os.environ.get("RAY_ADDRESS", "")).strip() or None


def _check_reachable(address: str) -> None:
    """Fail in seconds on a cluster that does not answer: ray.init retries for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise PipelineError(f"Ray cluster address {address!r}: expected host:port, ray://host:port or auto",
                            hint="set RAY_ADDRESS or [train] ray_address, or unset both for an embedded Ray")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise PipelineError(f"Ray cluster at {address} cannot be reached ({exc.strerror or exc})",
                            hint="start it (ray start --head) or unset RAY_ADDRESS / [train] ray_address "
                            "for an embedded Ray") from None


class Engine:
    """Where the trials run: ``sequential`` (this process) or ``ray`` (Ray tasks, local or a cluster)."""

    def __init__(self, name: str, address: str | None = None, why: str = ""):
        self.name = name
        self.address = address
        self.why = why  # the reason it was chosen (choose_engine), for the report
        self.cpus: int | None = None
        self.startup_seconds: float | None = None  # Ray's start, measured
        self._owned = False  # this engine started Ray (and stops it)
        self._depth = 0  # nested ``with``: Ray stays up for the outermost

    def describe(self) -> dict:
        where = (self.address or "local") if self.name == "ray" else "this process"
        return {"engine": self.name, "address": where, "cpus": self.cpus, "engine_choice": self.why,
                "ray_startup_seconds": self.startup_seconds}

    # ---- Ray session

    def __enter__(self) -> Engine:
        self._depth += 1
        if self.name != "ray" or self._depth > 1:
            return self
        try:
            self._start_ray()
        except BaseException:
            self._depth -= 1
            raise
        return self

    def _start_ray(self) -> None:
        for key, value in (("RAY_USAGE_STATS_ENABLED", "0"),
                           ("RAY_DEDUP_LOGS", "0")):
            os.environ.setdefault(key, value)
        if self.address is None:
            # Ray starts its workers at nice 15 (its default), below the train process: on a
            # machine where anything else runs, the trials then get a sliver of the CPU that the
            # sequential engine (trials in this process) gets in full. Measured on this project's
            # shared 2-core machine (another engineer's jobs, load average about 20), two front-end
            # fits took 4 min 14 s on nice-15 workers (docs/train.md). The trials run at the train
            # process's own priority instead (`nice make train` still lowers them); a cluster's
            # workers are the cluster's to configure. RAY_worker_niceness, when set, is obeyed.
            os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
        import ray

        if self.address is not None:
            _check_reachable(self.address)
        start = time.perf_counter()
        if not ray.is_initialized():
            root = Path(__file__).resolve().parents[1]  # the pipeline package
            env = {"TF_CPP_MIN_LOG_LEVEL": "3"}
            if self.address is None:  # same machine: the workers import this very package
                env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root.parent), os.environ.get("PYTHONPATH")) if p)
                runtime_env = {"env_vars": env}
            else:  # a cluster: ship the package (its nodes need the same Python packages)
                runtime_env = {"env_vars": env, "py_modules": [str(root)]}
            # Connecting to a cluster, Ray's C++ client logs each retry on stderr (a wrong
            # token, a version mismatch): kept off the terminal, the error says it in one line.
            # (Not for a local start: the processes it starts would inherit the muted stderr.)
            quiet = quiet_native_stderr() if self.address else contextlib.nullcontext()
            try:
                with quiet:
                    ray.init(address=self.address or "local", num_cpus=None if self.address else os.cpu_count(),
                             include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                             runtime_env=runtime_env)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all one line
                raise PipelineError(
                    f"Ray cluster at {self.address or 'local'}: could not connect ({one_line(exc)})",
                    hint="check RAY_ADDRESS / [train] ray_address; a cluster with token authentication "
                    "needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
            self._owned = True
        self.cpus = int(ray.cluster_resources().get("CPU", 0))
        self.startup_seconds = round(time.perf_counter() - start, 2)

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._owned and self._depth == 0:
            import ray

            ray.shutdown()
            self._owned = False

    # ---- running trials

    def run(self, tasks: list[TrialTask], data, desc: str,
            trial: Callable[[TrialTask, object], dict], out=print) -> tuple[list[dict], bool]:
        """One record per task, in task order, and whether Ctrl-C stopped the run; a line
        through ``out`` as each finishes."""
        bar = TrialSteps(len(tasks), desc, out)
        try:
            if self.name == "sequential":
                return self._run_here(tasks, data, trial, bar)
            return self._run_ray(tasks, data, trial, bar)
        finally:
            bar.close()

    def _run_here(self, tasks, data, trial, bar) -> tuple[list[dict], bool]:
        records: list[dict] = []
        try:
            for task in tasks:
                try:
                    records.append(trial(task, data))
                except Exception as exc:  # noqa: BLE001 - as the Ray engine records a trial that raised
                    records.append({**_stopped(task), "status": "failed", "error": one_line(exc)})
                bar.done(records[-1])
        except KeyboardInterrupt:
            return records + [_stopped(t) for t in tasks[len(records):]], True
        return records, False

    def _run_ray(self, tasks, data, trial, bar) -> tuple[list[dict], bool]:
        # Ray tasks, not Tune: Ray keeps its worker processes between tasks and between
        # rounds of one session (the DSP choice, the search, the round after the refit), so
        # each core imports TensorFlow once per `tinyml train`. Tune's actors were new
        # processes for every Tuner.fit, each importing TensorFlow again. The round after the
        # refit of the default run took 57 s on Tune (load 4-6), 25-32 s as tasks (load 3-15).
        import ray

        remote = ray.remote(num_cpus=TRIAL_CPUS, max_retries=0)(_ray_trial)
        shared = ray.put(data)  # one copy in the object store for every task
        pending = {remote.remote(task, shared, trial): i for i, task in enumerate(tasks)}
        records: list[dict | None] = [None] * len(tasks)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ref)
                try:
                    records[i] = json.loads(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - the trial raised, or its worker died
                    records[i] = {**_stopped(tasks[i]), "status": "failed", "error": _ray_error(exc)}
                bar.done(records[i])
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            return [r if r is not None else _stopped(t) for r, t in zip(records, tasks, strict=True)], True
        return records, False


def _ray_error(err: BaseException) -> str:
    """The trial's own exception rather than Ray's wrapper (RayTaskError, its traceback)."""
    cause = getattr(err, "cause", None)
    return one_line(cause if isinstance(cause, BaseException) else err)


def _stopped(task: TrialTask) -> dict:
    return {"trial": task.index, "source": task.source, "seed": task.seed, "status": "stopped",
            "params": task.params.as_dict(), "model_params": None, "train_score": None, "val_score": None,
            "train_loss": None, "val_loss": None, "epochs": None, "best_epoch": None}


def _ray_trial(task: TrialTask, data, trial) -> str:  # runs in a Ray worker
    import_tensorflow().get_logger().setLevel("ERROR")  # with the fixed thread count
    return json.dumps(trial(task, data), default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


# --------------------------------------------------------------------------- the choice

# The figures the choice is made by, measured with `python bench/bench_search.py
# --only-choice` on this project's 2-core machine. It was shared and loaded (load average
# 25-40) at the time, so the figures are CPU seconds (user + system, summed over every
# process), which the load does not inflate, not wall time:
# - Ray's start-up: ray.init without the dashboard, then a task on each of the 2 cores that
#   imports TensorFlow (as the first trials pay it): 21.5 CPU s (5.7 s of them ray.init).
#   Counted whole, as if nothing ran side by side: on 2 cores it takes at least half that.
RAY_STARTUP_S = 22.0
# - A task: a fixed part (model build, two int8 conversions, the TFLM arena, scoring):
#   5.4 CPU s; and training: 0.38 CPU s per epoch of the default config's 2,096 windows of
#   125 x 3 values, that is 4.8e-7 s per epoch per window per input value (one thread).
TASK_FIXED_S = 5.4
TRAIN_S_PER_EPOCH_VALUE = 4.8e-7  # seconds per epoch per window per input value


def expected_seconds(tasks: list[tuple[int, int]], input_values: int) -> float:
    """Sequential seconds for ``(epochs, windows)`` tasks on windows of ``input_values`` values."""
    return sum(TASK_FIXED_S + epochs * windows * input_values * TRAIN_S_PER_EPOCH_VALUE
               for epochs, windows in tasks)


def choose_engine(tc, work_s: float, cpus: int | None = None) -> Engine:
    """The engine the trials run on, and why.

    ``[train] search_engine`` "ray" or "sequential" is obeyed. "auto" (the default): Ray
    when a cluster address is given (``RAY_ADDRESS`` or ``[train] ray_address``); else Ray
    when the work it would spread over this machine's cores saves more than its start-up,
    that is when ``work_s * (1 - 1/cpus) > RAY_STARTUP_S``; else sequential (always on one
    core). ``work_s`` is the expected sequential cost of every task the engine would run
    (search trials, seed refits, leave-one-group-out folds: ``expected_seconds``).
    """
    address = ray_address(tc)
    if tc.search_engine == "sequential":
        return Engine("sequential", why="[train] search_engine = \"sequential\"")
    if tc.search_engine == "ray":
        return Engine("ray", address, why="[train] search_engine = \"ray\"")
    if address:
        source = "[train] ray_address" if tc.ray_address.strip() else "RAY_ADDRESS"
        return Engine("ray", address, why=f"a Ray cluster is given ({source} = {address})")
    cpus = cpus or os.cpu_count() or 1
    saved = work_s * (1 - 1 / cpus)
    rule = (f"the work, about {work_s:.0f} s on one core, would save {saved:.0f} s on {cpus} cores, "
            f"against Ray's start-up of about {RAY_STARTUP_S:.0f} s")
    if cpus > 1 and saved > RAY_STARTUP_S:
        return Engine("ray", None, why=rule)
    return Engine("sequential", why=rule if cpus > 1 else "one core: Ray cannot run trials side by side")
