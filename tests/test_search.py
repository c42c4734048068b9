"""The device-aware search on Ray (tasks): embedded local Ray and a head on loopback, the same
trials and winner as the sequential engine, device cost and budgets, failed trials, and an
unreachable cluster. Ray starts once for the module (it costs seconds); the data is tiny."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import QuantizeConfig, SearchSpace, TrainConfig
from pipeline.core.errors import GateFailed
from pipeline.data.windows import Windows
from pipeline.ml.model import ModelParams, class_priors

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def _windows(n: int, seed: int) -> Windows:
    """Noise plus a class-dependent offset on one channel: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    X = rng.normal(0, 1, size=(n, 32, 3)).astype(np.float32)
    X[np.arange(n), :, y % 3] += np.where(y < 3, 2.0, -2.0)[:, None]
    ids = np.array([f"w{seed}-{i}" for i in range(n)])
    return Windows(X=X, y=y.astype(np.int64), window_ids=np.array([f"{i}@0" for i in ids]),
                   sample_index=np.arange(n), offsets=np.zeros(n, dtype=np.int64), length=32,
                   recording_ids=ids, group_ids=ids, start_times=np.zeros(n))


TC = TrainConfig(trials=3, search_epochs=2, epochs=3, patience=2, batch_size=32, max_params=3000,
                 width=4, depth=1, kernel_size=3, learning_rate=3e-3,
                 search_space=SearchSpace(width_max=6, depth_max=2, lr_min=1e-3, lr_max=5e-3))
TRAIN, VAL = _windows(128, 1), _windows(64, 2)


def _budget(**changes) -> dict:
    from pipeline.train.search import device_budget

    return {**device_budget(QuantizeConfig()), **changes}


def _search(engine, trial=None, tc=TC, first=None):
    from pipeline.train.search import evaluate_trial, random_search

    return random_search(TRAIN, VAL, 4, class_priors(TRAIN.y, 4), tc, ModelParams.from_config(tc), 0,
                         _budget(), engine, trial or evaluate_trial, out=lambda _: None, first=first)


@pytest.fixture(scope="module")
def local_ray():
    """One embedded Ray for the module, as `tinyml train` starts it."""
    from pipeline.train.search import Engine

    with Engine("ray") as engine:
        yield engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


# --------------------------------------------------------------------------- no Ray needed


def test_an_unreachable_cluster_is_a_one_line_error_naming_the_address(tmp_path, capsys, monkeypatch):
    from tinyml_cli import main

    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", address)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--fast", "--run", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith(f"error: Ray cluster at {address} cannot be reached"), err
    assert len(err) == 2 and err[1].startswith("hint: ")
    assert time.perf_counter() - start < 120  # not Ray's minutes of retries
    assert not (tmp_path / "run" / "float.keras").exists()


def test_a_trial_over_the_board_budget_stops_before_training():
    from pipeline.train.search import TrialTask, evaluate_trial, trial_data

    data = trial_data(TRAIN, VAL, 4, class_priors(TRAIN.y, 4), TC, _budget(ram_bytes=1024), 0)
    record = evaluate_trial(TrialTask(0, ModelParams.from_config(TC), "config", 2, 0), data)
    assert record["status"] == "over_budget"
    assert record["over_budget"] == [f"RAM {record['device']['ram_bytes']} B > budget 1024 B"]
    assert record["epochs"] is None and record["val_score"] is None  # never trained
    d = record["device"]
    assert d["board"] == "nano33ble" and d["flash_bytes"] > 1000 and d["macs"] > 0
    assert d["ram_bytes"] >= d["arena_min_bytes"] > 1024 and d["latency_ms"] > 0 and d["latency_instructions"] > 0
    assert d["latency_label"].startswith("predicted from measured op costs")


def _record(i, val, ram, latency, status="ok"):
    return {"trial": i, "status": status, "val_score": val, "val_loss": 1 - val,
            "device": {"ram_bytes": ram, "latency_ms": latency}}


def test_choice_within_targets_and_the_pareto_fronts():
    from pipeline.train.search import choose, pareto_front

    trials = [_record(0, 0.90, 9000, 5.0), _record(1, 0.80, 4000, 1.0), _record(2, 0.85, 6000, 6.0),
              _record(3, 0.70, 5000, 0.5), _record(4, 0.99, 100, 0.1, status="failed")]
    assert choose(trials, 0, 0)[0]["trial"] == 0
    best, how = choose(trials, 6000 / 1024, 0)
    assert best["trial"] == 2 and "RAM <= 5.85938 KB" in how
    assert choose(trials, 0, 2.0)[0]["trial"] == 1
    assert [p["trial"] for p in pareto_front(trials, "ram_bytes")] == [1, 2, 0]
    assert [p["trial"] for p in pareto_front(trials, "latency_ms")] == [3, 1, 0]
    with pytest.raises(GateFailed, match=r"no search trial meets \[train\] RAM <= 1 KB: the smallest needs 3\.9 KB"):
        choose(trials, 1, 0)


def test_a_random_draw_replaces_the_configured_model_only_beyond_reseeding_noise():
    """fsdd's figures: trial 4 beat the configured model on one validation speaker by less
    than its own seeds spread, and was the worse model on the other speakers."""
    from pipeline.train.search import choose

    config = {**_record(0, 0.842, 21000, 27.6), "source": "config"}
    draw = {**_record(4, 0.870, 26000, 56.5), "source": "random"}
    worse = {**_record(1, 0.750, 23000, 21.2), "source": "random"}
    seeds = [{"seed": 1, "status": "ok", "val_score": 0.856}, {"seed": 2, "status": "ok", "val_score": 0.868}]
    best, how = choose([config, worse, draw], 0, 0, seeds)
    # mean 0.855, sd 0.013: a draw must gain more than 2 x 0.013 x sqrt(1 + 1/3) = 0.030
    assert best is config and "the configured model: no random draw beats it" in how
    assert "trial 4 val 0.870" in how and "+0.015 against a margin of 0.030" in how
    steady = [{"seed": 1, "status": "ok", "val_score": 0.843}, {"seed": 2, "status": "ok", "val_score": 0.841}]
    best, how = choose([config, worse, draw], 0, 0, steady)
    assert best is draw and "beyond reseeding noise" in how
    assert choose([config, worse, draw], 0, 0)[0] is draw  # no seeds, no noise figure: the highest score
    failed = [{"seed": 1, "status": "failed", "val_score": None}]
    assert choose([config, worse, draw], 0, 0, failed)[0] is draw
    # The configured model outside a target: the rule has nothing to keep.
    assert choose([config, worse, draw], 0, 25.0, seeds)[0] is worse


def _grouped(n: int, seed: int, groups: list[str]) -> Windows:
    w = _windows(n, seed)
    g = np.array([groups[i % len(groups)] for i in range(n)])
    return Windows(X=w.X, y=w.y, window_ids=w.window_ids, sample_index=w.sample_index, offsets=w.offsets,
                   length=w.length, recording_ids=w.recording_ids, group_ids=g, start_times=w.start_times)


def test_the_finals_score_each_contender_as_the_round_after_the_refit_would_and_settle_by_the_mean():
    """``finals`` leaves each contender's groups out as ``after_refit`` does (the winner's
    summary stands in for that round's), and ``settle`` keeps the configured model unless the
    draw scores higher."""
    from pipeline.train.search import Engine, after_refit, finals, settle

    train, val = _grouped(96, 1, ["a", "b", "c"]), _grouped(32, 2, ["d"])
    priors = class_priors(train.y, 4)
    config = {"trial": 0, "source": "config", "params": ModelParams(width=4, depth=1, kernel_size=3,
              learning_rate=3e-3).as_dict(), "best_epoch": 2, "val_score": 0.80}
    draw = {**config, "trial": 3, "source": "random", "val_score": 0.90,
            "params": ModelParams(width=6, depth=1, kernel_size=5, learning_rate=3e-3).as_dict()}
    lines = []
    kept, won = finals([config, draw], train, val, 4, priors, TC, 0, _budget(), 5, Engine("sequential"),
                       out=lines.append)
    assert [s["held_out"] for s in kept["scores"]] == [["a"], ["b"], ["c"], ["d"]]
    assert any("trial 0, held out a: balanced accuracy" in x for x in lines)
    assert any("trial 3, held out d: balanced accuracy" in x for x in lines)
    assert kept["epochs"] == won["epochs"] == 2
    round_ = after_refit(config, train, val, 4, priors, TrainConfig(**{**TC.__dict__, "seeds": 1}), 0, _budget(),
                         (5, 2), Engine("sequential"), out=str)
    assert round_["logo"] == kept
    chosen, how, logo = settle(config, draw, kept, {**won, "mean": kept["mean"]}, "x")
    assert chosen is config and "not on new groups" in how and "the higher of two" in logo["used_for_selection"]
    chosen, how, logo = settle(config, draw, kept, {**won, "mean": kept["mean"] + 0.01}, "beyond noise")
    assert chosen is draw and how.startswith("beyond noise; left out group by group")
    assert logo["mean"] == kept["mean"] + 0.01


def test_the_search_leaves_the_configured_model_out_beside_its_trials_as_the_round_after_the_refit_would():
    """With ``logo``, the configured model's folds run in the search's round; they are not
    trials, and their summary is the one ``after_refit`` and ``finals`` would make (so both
    take it instead of fitting again)."""
    from pipeline.train.search import Engine, after_refit, finals, group_folds, random_search

    train, val = _grouped(96, 1, ["a", "b", "c"]), _grouped(32, 2, ["d"])
    priors = class_priors(train.y, 4)
    tc = TrainConfig(**{**TC.__dict__, "seeds": 1, "trials": 2})
    lines = []
    search = random_search(train, val, 4, priors, tc, ModelParams.from_config(tc), 0, _budget(),
                           Engine("sequential"), out=lines.append, logo=group_folds(train, val, 5))
    assert [t["source"] for t in search["trials"]] == ["config", "random"] and search["counts"]["ok"] == 2
    assert sum("trial 0, held out" in x for x in lines) == 4
    config = search["trials"][0]
    round_ = after_refit(config, train, val, 4, priors, tc, 0, _budget(), (5, tc.search_epochs),
                         Engine("sequential"), out=str)
    assert search["config_logo"] == round_["logo"] and search["config_logo"]["epochs"] == tc.search_epochs
    draw = {**search["trials"][1], "best_epoch": tc.search_epochs}
    lines.clear()
    kept, won = finals([config, draw], train, val, 4, priors, tc, 0, _budget(), 5, Engine("sequential"),
                       out=lines.append, done={0: search["config_logo"]})
    assert kept is search["config_logo"] and len(won["scores"]) == 4
    assert not any("trial 0, held out" in x for x in lines) and "(4 fits" in lines[0]
    assert "beyond reseeding noise" not in lines[0]  # one seed: no noise was measured


def test_the_engine_is_chosen_from_a_cluster_address_or_the_expected_work(monkeypatch):
    from pipeline.train.engine import RAY_STARTUP_S, choose_engine, expected_seconds

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    auto = TrainConfig()
    assert auto.search_engine == "auto"
    small, large = RAY_STARTUP_S, 4 * RAY_STARTUP_S  # saves half on 2 cores: below, above the start-up
    assert choose_engine(auto, small, cpus=2).name == "sequential"
    chosen = choose_engine(auto, large, cpus=2)
    assert chosen.name == "ray" and chosen.address is None and "start-up" in chosen.why
    assert choose_engine(auto, 100 * large, cpus=1).name == "sequential"  # one core: nothing side by side
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    given = choose_engine(auto, small, cpus=2)
    assert given.name == "ray" and given.address == "10.0.0.1:6379" and "RAY_ADDRESS" in given.why
    assert choose_engine(TrainConfig(search_engine="sequential"), large, cpus=2).name == "sequential"
    assert choose_engine(TrainConfig(search_engine="ray"), small, cpus=2).describe()["engine_choice"]
    # More epochs, windows or input values: more expected work.
    assert expected_seconds([(40, 2000)], 375) > expected_seconds([(10, 2000)], 375) > expected_seconds([(10, 500)], 375)


def test_one_line_per_finished_trial_with_score_ram_latency_elapsed_and_eta():
    from pipeline.train.engine import TrialSteps

    lines = []
    steps = TrialSteps(3, "search trial", lines.append)
    device = {"ram_bytes": 7968, "latency_ms": 13.7}
    steps.done({"trial": 0, "status": "ok", "val_score": 0.9, "epochs": 12, "device": device})
    steps.done({"trial": 2, "status": "over_budget", "val_score": None, "device": device,
                "over_budget": ["RAM 7968 B > budget 1024 B"]})
    steps.done({"trial": 1, "status": "failed", "error": "MemoryError: x"})
    assert lines[0].startswith("  search trial 1/3: trial 0 val 0.900 (12 epochs), RAM 7,968 B, latency 13.70 ms; ")
    assert "elapsed, about" in lines[0] and lines[0].endswith(" left")
    assert "[over budget: RAM 7968 B > budget 1024 B]" in lines[1]
    assert lines[2].startswith("  search trial 3/3: trial 1 failed [failed: MemoryError: x]; ") and "left" not in lines[2]
    steps.close()
    # The best so far is a trial's: a seed fit of the configured model scoring higher is not.
    steps = TrialSteps(2, "search trial", lines.append)
    steps.done({"trial": 0, "source": "config", "status": "ok", "val_score": 0.9, "epochs": 12})
    steps.done({"trial": 11, "source": "seed", "seed": 1, "status": "ok", "val_score": 0.95, "epochs": 12})
    assert steps.best["trial"] == 0
    steps.close()


# --------------------------------------------------------------------------- embedded Ray


def test_ray_and_sequential_give_the_same_trials_and_winner(local_ray):
    from pipeline.train.search import Engine

    on_ray = _search(local_ray)
    here = _search(Engine("sequential"))
    assert on_ray["engine"] == "ray" and on_ray["address"] == "local" and on_ray["cpus"] == os.cpu_count()
    assert here["engine"] == "sequential"
    assert [t["params"] for t in on_ray["trials"]] == [t["params"] for t in here["trials"]]
    assert [t["status"] for t in on_ray["trials"]] == ["ok"] * TC.trials
    assert on_ray["best"]["trial"] == here["best"]["trial"]
    for a, b in zip(on_ray["trials"], here["trials"], strict=True):
        assert a["device"] == b["device"]  # the int8 model and its arena do not depend on the engine
        # TensorFlow runs on the same fixed thread count in a Ray worker and here: the same bits.
        assert a["val_score"] == b["val_score"] and a["history"] == b["history"]
    for cost in ("ram_bytes", "latency_ms"):
        front = on_ray["pareto"][cost.split("_")[0]]
        assert front and [p[cost] for p in front] == sorted(p[cost] for p in front)
        assert [p["val_score"] for p in front] == sorted(p["val_score"] for p in front)
        assert max(p["val_score"] for p in front) == max(t["val_score"] for t in on_ray["trials"])
    assert on_ray["trials_per_min"] > 0


def test_ray_workers_run_at_the_train_process_priority(local_ray):
    """Not Ray's default nice 15, which starves the trials whenever anything else runs."""
    import ray

    @ray.remote(num_cpus=1)
    def niceness():
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)


def _not_trial_0(task, data):
    from pipeline.train.search import evaluate_trial

    assert task.index != 0, "trial 0 was given: it must not be trained again"
    return evaluate_trial(task, data)


def test_a_given_trial_0_is_reused_not_trained_again_and_the_search_is_the_same():
    """The DSP choice hands its fit of the chosen block to the search as trial 0."""
    from pipeline.train.search import Engine

    whole = _search(Engine("sequential"))
    given = {**whole["trials"][0], "trial": 1, "source": "block", "block": "spectral"}  # as choose_block returns it
    reused = _search(Engine("sequential"), _not_trial_0, first=given)
    assert reused["trials"][0]["reused"] and reused["reused_trials"] == 1
    assert reused["trials"][0]["trial"] == 0 and reused["trials"][0]["source"] == "config"
    assert "block" not in reused["trials"][0]
    drop = ("seconds", "reused")
    assert ([{k: v for k, v in t.items() if k not in drop} for t in reused["trials"]]
            == [{k: v for k, v in t.items() if k not in drop} for t in whole["trials"]])
    assert reused["best"]["trial"] == whole["best"]["trial"]
    # A failed trial 0 (a crash need not repeat) is trained again.
    failed = {**given, "status": "failed", "error": "MemoryError: x"}
    again = _search(Engine("sequential"), tc=TrainConfig(**{**TC.__dict__, "trials": 1}), first=failed)
    assert again["reused_trials"] == 0 and again["trials"][0]["status"] == "ok"
    assert again["trials"][0]["val_score"] == whole["trials"][0]["val_score"]


def _fails_on_trial_1(task, data):
    """A trial that raises (trial 1 runs out of memory), the others as usual."""
    from pipeline.train.search import evaluate_trial

    if task.index == 1:
        np.ones((10**7, 10**7))  # 800 TB: MemoryError
    return evaluate_trial(task, data)


def test_a_trial_that_raises_is_recorded_as_failed_and_the_search_goes_on(local_ray):
    from ray import cloudpickle  # Ray's own copy serializes the trial function

    from pipeline.train.search import Engine

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
    for engine in (local_ray, Engine("sequential")):
        search = _search(engine, _fails_on_trial_1, TrainConfig(**{**TC.__dict__, "trials": 2}))
        assert [t["status"] for t in search["trials"]] == ["ok", "failed"], search["trials"]
        assert search["trials"][1]["error"].startswith("MemoryError: Unable to allocate"), search["trials"][1]
        assert search["counts"] == {"ok": 1, "over_budget": 0, "failed": 1, "stopped": 0}
        assert search["best"]["trial"] == 0


# --------------------------------------------------------------------------- a head on loopback


def test_tinyml_train_runs_its_trials_on_a_ray_head_on_loopback(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    # Ray >= 2.5x authenticates clients with a token: this cluster's own, given to both ends.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    # --block keeps the head and everything it starts in one process group of ours, stopped
    # as a group at the end (`ray stop` would stop every Ray on the machine). SIGKILL: on
    # SIGTERM an idle head drains for 30 s first.
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        env=_env(**auth), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert head.poll() is None, head.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the Ray head did not come up in 60 s"
            time.sleep(0.5)
        run = tmp_path / "run"
        proc = subprocess.run([sys.executable, "-m", "tinyml_cli", "train", "--fast", "--run", str(run)],
                              env=_env(RAY_ADDRESS=address, **auth), cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        search = json.loads((run / "train_report.json").read_text())["search"]
        assert search["engine"] == "ray" and search["address"] == address and search["cpus"] == 2
        assert all(t["status"] == "ok" for t in search["trials"]) and len(search["trials"]) == 3
        assert search["pareto"]["ram"] and search["pareto"]["latency"]
        assert f"search ran on ray ({address})" in proc.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)
