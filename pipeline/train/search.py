"""Random search (Bergstra & Bengio 2012: random beats grid when few knobs matter), device-aware,
on Ray.

Learning rate, width, depth, kernel size, dropout and L2 are drawn at random within the
bounds of ``[train] search_*``; trial 0 is the configured model itself, so the search can
only improve on it. Each trial trains on the training split and is scored on the
validation split, never on test. Every trial is kept with its training and validation
scores, so overfitting is visible in the report.

Every trial also learns what its model costs on the configured board, as Edge Impulse's
EON Tuner does: converted to int8 (calibrated on training windows), its flash bytes, TFLM
arena (the RAM it needs), MACs and predicted latency (pipeline/tflite/latency.py). A model
over the board's budget is stopped before it trains. The result holds the Pareto front of
validation balanced accuracy against RAM and against latency, and the chosen model is the
most accurate one within ``[train] max_ram_kb`` / ``max_latency_ms`` (when set).

The trials run on the engine ``pipeline.train.engine.choose_engine`` picks: Ray tasks (an
embedded local Ray with the machine's cores, or the cluster of ``RAY_ADDRESS`` / ``[train]
ray_address``) or one after another in this process. The candidates are drawn here, before
any trial runs, and each trial seeds itself (TensorFlow on a fixed thread count), so both
engines give the same trials, the same scores to the bit and the same winner.

After the refit, one more round on the same engine (``after_refit``): the chosen
configuration with more seeds (the spread of its score) and without each group of the
training side (leave-one-group-out), sharing one copy of the data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.core.boards import get_board, model_budgets
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.data.windows import Windows
from pipeline.ml import model as M
from pipeline.ml.metrics import scores
from pipeline.ml.model import ModelParams, count_params
from pipeline.tflite.convert import convert_int8
from pipeline.tflite.flatbuffer import inspect_model
from pipeline.tflite.latency import engine_latency
from pipeline.tflite.runtime import measure_arena
from pipeline.train.choice import STATUSES, choose, pareto_front, within_targets
from pipeline.train.engine import Engine, TrialTask, one_line

SCORE = "balanced_accuracy"
MAX_DRAWS = 200  # draws per trial before giving up on the parameter budget


def search_space(tc) -> dict:
    """The bounds of ``tc.search_space``, checked: what the report shows and ``sample`` draws from."""
    sp = tc.search_space
    for lo, hi in (("lr_min", "lr_max"), ("width_min", "width_max"), ("depth_min", "depth_max"),
                   ("kernel_min", "kernel_max"), ("l2_min", "l2_max")):
        a, b = getattr(sp, lo), getattr(sp, hi)
        if not 0 < a <= b:
            raise PipelineError(f"[train.search_space] {lo}/{hi}: expected 0 < {lo} <= {hi}, got {a} and {b}")
    if not 0.0 <= sp.dropout_max < 1.0:
        raise PipelineError(f"[train.search_space] dropout_max: expected 0 <= value < 1, got {sp.dropout_max}")
    return {
        "learning_rate": {"dist": "log-uniform", "low": sp.lr_min, "high": sp.lr_max},
        "width": {"dist": "int-uniform", "low": sp.width_min, "high": sp.width_max},
        "depth": {"dist": "int-uniform", "low": sp.depth_min, "high": sp.depth_max},
        "kernel_size": {"dist": "odd-uniform", "low": sp.kernel_min, "high": sp.kernel_max},
        "dropout": {"dist": "uniform", "low": 0.0, "high": sp.dropout_max},
        "l2": {"dist": "log-uniform", "low": sp.l2_min, "high": sp.l2_max},
        "max_params": tc.max_params,
        "score": f"{SCORE} on the validation split",
    }


def sample(rng: np.random.Generator, space: dict, base: ModelParams) -> ModelParams:
    def log_uniform(d):
        return float(math.exp(rng.uniform(math.log(d["low"]), math.log(d["high"]))))

    k = space["kernel_size"]
    odd = [v for v in range(k["low"], k["high"] + 1) if v % 2 == 1] or [k["low"]]
    return base.replace(
        learning_rate=round(log_uniform(space["learning_rate"]), 6),
        width=int(rng.integers(space["width"]["low"], space["width"]["high"] + 1)),
        depth=int(rng.integers(space["depth"]["low"], space["depth"]["high"] + 1)),
        kernel_size=int(rng.choice(odd)),
        dropout=round(float(rng.uniform(0.0, space["dropout"]["high"])), 3),
        l2=float(f"{log_uniform(space['l2']):.2g}"),
    )


def candidates(tc, base: ModelParams, input_shape: tuple, n_classes: int, seed: int,
               space: dict | None = None) -> list[ModelParams]:
    """The configured model, then ``trials - 1`` random draws within the parameter budget."""
    space = space if space is not None else search_space(tc)
    rng = np.random.default_rng(seed)
    out = [base]
    seen = {base}
    while len(out) < tc.trials:
        for _ in range(MAX_DRAWS):
            p = sample(rng, space, base)
            if p not in seen and count_params(input_shape, n_classes, p) <= tc.max_params:
                break
        else:
            raise PipelineError(
                f"[train] max_params {tc.max_params}: no model in the search space is that small "
                f"after {MAX_DRAWS} draws", hint="lower [train.search_space] width_max/depth_max or raise max_params")
        out.append(p)
        seen.add(p)
    return out


def epoch_cap(tc, epochs: int) -> int:
    """The epochs a fit asked for ``epochs`` runs: as many under a constant rate; under cosine
    at most the search's budget, over which the rate decays to zero (``run_trial``)."""
    return min(epochs, tc.search_epochs) if tc.lr_schedule == "cosine" else epochs


def refit_repeats_search(tc) -> bool:
    """The refit and its seed refits run the search's epochs (``epoch_cap``): a fit of the
    configured model in the search (a seed fit; under cosine, a fold too) is then one the
    rounds after the refit would make."""
    return epoch_cap(tc, tc.epochs) == tc.search_epochs


def run_trial(params: ModelParams, train: Windows, val: Windows, n_classes: int, priors, tc,
              epochs: int, seed: int, on_epoch=None, curves: bool = True) -> tuple[dict, object]:
    """Train one configuration from the same seed; score it on train and validation.

    A cosine schedule decays over the search's epoch budget whatever ``epochs`` is (then
    the learning rate is zero, so no fit runs longer): a trial, its refit and its seed
    refits follow one schedule, and the refit repeats its trial epoch for epoch.

    ``curves=False``: under cosine, validation is scored once, after the last epoch, not
    after each (nothing stops early; the per-epoch validation curve is the refit's, for the
    report). The weights are the same to the bit; 25 epochs of the default model on windows
    shaped as motion's spectral features (2,096 x 1 x 33, random values; 884 to validate)
    took 2.7-3.0 s without the per-epoch validation, 3.8-4.8 s with it."""
    M.seed_everything(seed)
    net = M.build_model(train.X.shape[1:], n_classes, params, train.X, priors)
    epochs = epoch_cap(tc, epochs)
    per_epoch = (val.X, val.y) if curves or tc.lr_schedule != "cosine" else None
    fitted = M.fit(net, (train.X, train.y), per_epoch, params, epochs, tc.batch_size,
                   tc.patience, tc.lr_schedule, on_epoch=on_epoch, decay_epochs=tc.search_epochs)
    train_proba = M.predict_proba(net, train.X)
    val_proba = M.predict_proba(net, val.X)
    trial = {
        "params": params.as_dict(),
        "model_params": int(net.count_params()),
        "train_score": scores(train.y, train_proba.argmax(1), n_classes)[SCORE],
        "val_score": scores(val.y, val_proba.argmax(1), n_classes)[SCORE],
        "train_loss": M.cross_entropy(train_proba, train.y),
        "val_loss": M.cross_entropy(val_proba, val.y),
        "epochs": fitted["epochs_run"],
        "best_epoch": fitted["best_epoch"],
        # Per epoch: the reproducibility check compares the refit's first epochs with these.
        "history": fitted["history"],
    }
    fitted["proba"] = {"train": train_proba, "val": val_proba}  # scored once, reused by the caller
    return trial, (net, fitted)


# --------------------------------------------------------------------------- device cost

# Training windows the search's int8 conversions are calibrated on. A trial's flash bytes,
# arena and MACs depend on its tensor shapes, not on the calibration values, so a small
# sample does; it is drawn from the training split only, like the quantize stage's.
CALIBRATION_WINDOWS = 50


def device_budget(q) -> dict:
    """The board's flash and RAM budget for a model, from ``[quantize]`` (the same rule the
    quantize stage gates on: the board's memory minus the reserve kept for the firmware,
    unless a budget in bytes is configured)."""
    flash_bytes, ram_bytes = model_budgets(q)
    return {"board": get_board(q.board).name, "flash_bytes": flash_bytes, "ram_bytes": ram_bytes,
            "arena_margin": q.arena_margin}


def device_cost(net, calibration_x: np.ndarray, budget: dict, arena=None) -> tuple[dict, object]:
    """What ``net`` costs on the budget's board as int8: flash bytes, RAM (the TFLM arena
    the firmware would ship: measured minimum x (1 + margin), a 64-bit host figure), MACs
    and the latency (pipeline/tflite/latency.py: the compiled engine's instructions predicted
    from op costs measured on QEMU, at the board's clock). Returns the figures and the arena
    measurement (pass it back for the same architecture: the arena depends only on tensor shapes)."""
    data, _ = convert_int8(net, calibration_x)
    info = inspect_model(data)
    arena = arena if arena is not None else measure_arena(data)
    latency = engine_latency(data, budget["board"], budget.get("engine", "compiled"), info.total_macs)
    return {
        "board": budget["board"],
        "flash_bytes": len(data),
        "arena_min_bytes": arena.min_bytes,
        "ram_bytes": arena.exported(budget["arena_margin"]),
        "macs": info.total_macs,
        "latency_ms": latency["ms"],
        "latency_instructions": latency.get("instructions"),
        "latency_label": latency["label"],
    }, arena


def over_budget(cost: dict, budget: dict) -> list[str]:
    return [f"{what} {cost[key]} B > budget {budget[key]} B"
            for what, key in (("flash", "flash_bytes"), ("RAM", "ram_bytes")) if cost[key] > budget[key]]


# --------------------------------------------------------------------------- one trial


@dataclass
class TrialData:
    """Everything a trial needs: shipped once to each Ray worker (the object store)."""

    train: Windows
    val: Windows
    n_classes: int
    priors: np.ndarray
    tc: object  # TrainConfig
    budget: dict
    calibration_x: np.ndarray
    folds: GroupFolds | None = None  # leave-one-group-out, for the round after the refit


@dataclass
class GroupFolds:
    """The training side (train + validation) and its folds of whole groups."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # str, one per window
    folds: list  # (fit indices, held-out indices)
    how: str



def evaluate_trial(task: TrialTask, data: TrialData) -> dict:
    """Cost, train and score one configuration. A trial's own error is recorded in the
    result (status "failed"), never raised: the search goes on without it."""
    import keras

    start = time.perf_counter()
    record = {"trial": task.index, "source": task.source, "seed": task.seed, "status": "failed",
              "params": task.params.as_dict(), "model_params": None, "train_score": None,
              "val_score": None, "train_loss": None, "val_loss": None, "epochs": None,
              "best_epoch": None}
    try:
        arena = None
        if task.cost:
            # Before training: arena and MACs depend only on tensor shapes, so the freshly
            # built model's are the trained model's, and a model over budget never trains.
            M.seed_everything(task.seed)
            net = M.build_model(data.train.X.shape[1:], data.n_classes, task.params, data.train.X, data.priors)
            record["device"], arena = device_cost(net, data.calibration_x, data.budget)
            del net
            keras.backend.clear_session(free_memory=False)
            over = over_budget(record["device"], data.budget)
            if over:
                record.update(status="over_budget", over_budget=over)
                return record
        trial, (net, fitted) = run_trial(task.params, data.train, data.val, data.n_classes, data.priors,
                                         data.tc, task.epochs, task.seed, curves=False)
        record.update(trial)
        if task.source == "seed":  # the quantize stage's agreement gate compares int8 with these
            record["val_predictions"] = fitted["proba"]["val"].argmax(1).tolist()
        if task.cost:
            # Flash bytes do change a little with the weights (the trained model's are
            # recorded: 11,432 B before and 12,080 B after training for the default model).
            record["device"], _ = device_cost(net, data.calibration_x, data.budget, arena)
            over = over_budget(record["device"], data.budget)
            if over:
                record.update(status="over_budget", over_budget=over)
                return record
        record["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any error of one trial, MemoryError included
        record["error"] = one_line(exc)
    finally:
        keras.backend.clear_session(free_memory=False)
        record["seconds"] = round(time.perf_counter() - start, 2)
    return record


# --------------------------------------------------------------------------- engines


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during the search: carries the finished trials (``.search``)."""

    def __init__(self, search: dict):
        super().__init__("search interrupted")
        self.search = search


# --------------------------------------------------------------------------- the search


def trial_data(train: Windows, val: Windows, n_classes: int, priors, tc, budget: dict, seed: int) -> TrialData:
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), size=min(CALIBRATION_WINDOWS, len(train)), replace=False))
    return TrialData(train, val, n_classes, np.asarray(priors), tc, budget, train.X[pick])


def round_trial(task: TrialTask, data: TrialData) -> dict:
    """A task of a round on the engine: a leave-one-group-out fold (``fold_trial``), or a
    trial (a search draw, a seed fit: ``evaluate_trial``)."""
    return fold_trial(task, data) if task.source == "fold" else evaluate_trial(task, data)


def random_search(train: Windows, val: Windows, n_classes: int, priors, tc, base: ModelParams,
                  seed: int, budget: dict, engine: Engine | None = None,
                  trial: Callable[[TrialTask, TrialData], dict] = round_trial, out=print,
                  first: dict | None = None, logo: GroupFolds | None = None) -> dict:
    """All trials (scores, device cost, status), the Pareto fronts, and the chosen trial
    (``best``). Raises SearchInterrupted (with the finished trials) on Ctrl-C.

    ``first``: trial 0 (the configured model for ``search_epochs`` from ``seed``) already
    trained on these very windows, as the DSP choice does for the block it chooses: its
    record is trial 0 and it is not trained again (the same task on the same data gives the
    same record to the bit; a failed one is run again).

    ``logo``: the training side's folds (``group_folds``). The configured model is then also
    left out group by group in the same round, for the search's epochs (``config_logo``):
    the round after the refit needs those very fits when it is chosen, and the finals when a
    draw challenges it, so they fill the round's idle cores instead of a round of their own."""
    space = search_space(tc)
    params = candidates(tc, base, train.X.shape[1:], n_classes, seed, space)
    tasks = [TrialTask(i, p, "config" if i == 0 else "random", tc.search_epochs, seed) for i, p in enumerate(params)]
    # The configured model from the next seeds, beside the draws: how far reseeding alone
    # moves its score (``choose``); when it is chosen, these are its seed refits too.
    tasks += [TrialTask(len(params) + i, base, "seed", tc.search_epochs, seed + 1 + i, cost=False)
              for i in range(tc.seeds - 1)]
    if logo is not None:
        tasks += fold_tasks(base, tc.search_epochs, seed, logo, of=0)
    data = trial_data(train, val, n_classes, priors, tc, budget, seed)
    data.folds = logo
    engine = engine or Engine("sequential")
    reused = []
    if first is not None and first.get("status") in ("ok", "over_budget") and first.get("params") == base.as_dict():
        reused = [{**{k: v for k, v in first.items() if k != "block"}, "trial": 0, "source": "config",
                   "reused": "the DSP choice's fit of the chosen block (the same task and data)"}]
        tasks = tasks[1:]
        out(f"train: trial 0 (the configured model) is the DSP choice's fit of the chosen block: "
            f"val {first['val_score']:.3f}, not trained again" if first.get("val_score") is not None else
            "train: trial 0 (the configured model) is the DSP choice's fit of the chosen block, not trained again")
    start = time.perf_counter()
    with engine:
        records, interrupted = engine.run(tasks, data, "search trial", trial, out)
    trials = reused + [r for r in records if r.get("source") not in ("seed", "fold")]
    config_seeds = [r for r in records if r.get("source") == "seed"]
    seconds = time.perf_counter() - start
    counts = {s: sum(t["status"] == s for t in trials) for s in STATUSES}
    result = {
        "space": space, "epochs": tc.search_epochs, **engine.describe(),
        "budget": budget, "targets": {"max_ram_kb": tc.max_ram_kb, "max_latency_ms": tc.max_latency_ms},
        "trials": trials, "counts": counts, "seconds": round(seconds, 2),
        "trials_per_min": round(60 * sum(r["status"] != "stopped" for r in records) / seconds, 2) if seconds > 0 else None,
        "reused_trials": len(reused),
        "interrupted": interrupted,
    }
    result["pareto"] = {"ram": pareto_front(trials, "ram_bytes"), "latency": pareto_front(trials, "latency_ms"),
                        "note": "validation balanced accuracy against ram_bytes (the TFLM arena as exported: "
                        "measured minimum x (1 + arena_margin), a 64-bit host figure) and against latency_ms "
                        "(the compiled engine on the configured board, predicted from op costs measured on QEMU)"}
    # Their scores go in the report; their records (with validation predictions) to the caller.
    result["config_seeds"] = [{k: r.get(k) for k in ("seed", "status", "val_score", "epochs", "error") if k in r}
                              for r in config_seeds]
    result["config_seed_records"] = config_seeds
    if interrupted:
        raise SearchInterrupted(result)
    if logo is not None:
        result["config_logo"] = logo_summary([r for r in records if r.get("source") == "fold"], logo.how,
                                             tc.search_epochs)
    result["best"], result["chosen_by"] = choose(trials, tc.max_ram_kb, tc.max_latency_ms, config_seeds)
    # A draw that beat the configured model beyond reseeding noise, both within the targets:
    # the one validation split has spoken, the other groups may not agree (``finals``).
    config = next((t for t in within_targets(trials, tc.max_ram_kb, tc.max_latency_ms)[0]
                   if t.get("source") == "config"), None)
    result["rival"] = config["trial"] if config is not None and result["best"] is not config else None
    return result


def finals(contenders: list[dict], train: Windows, val: Windows, n_classes: int, priors, tc, seed: int,
           budget: dict, logo_folds: int, engine: Engine | None = None, out=print,
           done: dict | None = None) -> list[dict] | None:
    """Each contender (a search record) left out group by group on the training side, as
    the chosen configuration is after the refit (``after_refit``: the same folds, seed and
    epochs: the trial's), in one round on the search's engine. One summary per contender
    (``logo_summary``), or None without groups to leave out. ``done``: summaries already
    made, by trial (the search's ``config_logo``), not fitted again.

    One validation split holds few groups (fsdd: one speaker of six): a draw that beat the
    configured model there, beyond reseeding noise, may still be the worse model on new
    groups. fsdd's trial 4: validation 0.870 against the configured model's 0.835 over 3
    seeds, but leave-one-speaker-out 0.830 against its 0.861."""
    folds = group_folds(train, val, logo_folds)
    if not isinstance(folds, GroupFolds):
        return None
    done = done or {}
    todo = [c for c in contenders if c["trial"] not in done]
    tasks = [t for c in todo for t in fold_tasks(ModelParams(**c["params"]), c["best_epoch"], seed, folds,
                                                   of=c["trial"])]
    engine = engine or Engine("sequential")
    beyond = " beyond reseeding noise" if tc.seeds > 1 else ""  # one seed: no noise measured
    out(f"train: trial {contenders[-1]['trial']} beat the configured model on validation{beyond}: "
        f"both left out group by group ({len(tasks)} fits, on {engine.name}"
        f"{'; ' + ', '.join(f'trial {t} already fitted in the search' for t in done) if done else ''})")
    records = run_round(tasks, trial_data(train, val, n_classes, priors, tc, budget, seed), folds, engine,
                        "final fit", out)
    n = len(folds.folds)
    summaries = {**{c["trial"]: logo_summary(records[j * n:(j + 1) * n], folds.how, c["best_epoch"])
                    for j, c in enumerate(todo)}, **done}
    return [summaries[c["trial"]] for c in contenders]


def group_folds(train: Windows, val: Windows, logo_folds: int) -> GroupFolds | dict | None:
    """The training side's folds of whole groups for leave-one-group-out: one per group up to
    ``logo_folds`` groups, else that many folds (GroupKFold); a dict saying why when there
    are fewer than 3 groups; None when ``logo_folds`` is 0 (off, or data without groups)."""
    if logo_folds == 0:
        return None
    X = np.concatenate([train.X, val.X])
    y = np.concatenate([train.y, val.y])
    groups = np.concatenate([train.group_ids, val.group_ids]).astype(str)
    uniq = np.unique(groups)
    if uniq.size < 3:
        return {"skipped": f"{uniq.size} subject(s)/device(s) on the training side; needs 3 or more"}
    if uniq.size <= logo_folds:
        return GroupFolds(X, y, groups, [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in uniq],
                          "leave one group out")
    from sklearn.model_selection import GroupKFold  # heavy: imported when used

    return GroupFolds(X, y, groups, list(GroupKFold(n_splits=logo_folds).split(X, y, groups)),
                      f"{logo_folds} folds of whole groups (GroupKFold), more groups than [train] logo_folds")


def fold_trial(task: TrialTask, data: TrialData) -> dict:
    """One leave-one-group-out fold (``task.index``): the configuration trained without the
    fold's groups for ``task.epochs`` (no early stopping: stopping on the held-out group
    would choose by it), scored on them."""
    import keras

    f = data.folds
    fit_idx, held = f.folds[task.index]
    M.seed_everything(task.seed)
    net = M.build_model(f.X.shape[1:], data.n_classes, task.params, f.X[fit_idx],
                        M.class_priors(f.y[fit_idx], data.n_classes))
    # The configured schedule (and augmentation) over the fold's epochs, without validation.
    M.fit(net, (f.X[fit_idx], f.y[fit_idx]), None, task.params, max(1, task.epochs), data.tc.batch_size,
          data.tc.patience, data.tc.lr_schedule)
    sc = scores(f.y[held], M.predict_proba(net, f.X[held]).argmax(1), data.n_classes)
    keras.backend.clear_session(free_memory=False)
    return {"trial": task.index, "source": "fold", "seed": task.seed, "status": "ok", "of": task.of,
            "held_out": sorted(set(f.groups[held].tolist())), "windows": int(held.size),
            "classes": int(np.unique(f.y[held]).size), "balanced_accuracy": round(sc["balanced_accuracy"], 4),
            "accuracy": round(sc["accuracy"], 4)}


def fold_tasks(params: ModelParams, epochs: int, seed: int, folds: GroupFolds, of: int | None = None) -> list[TrialTask]:
    """One task per fold of ``folds``: ``params`` trained without the fold's groups."""
    return [TrialTask(i, params, "fold", epochs, seed, cost=False, of=of) for i in range(len(folds.folds))]


def run_round(tasks: list[TrialTask], data: TrialData, folds: GroupFolds | None, engine: Engine, desc: str,
              out) -> list[dict]:
    """Seed refits and folds (``round_trial``) on the search's engine, sharing ``data`` (with
    ``folds``); Ctrl-C stops the stage."""
    data.folds = folds
    with engine:
        records, interrupted = engine.run(tasks, data, desc, round_trial, out)
    if interrupted:
        raise KeyboardInterrupt
    return records


def settle(config: dict, draw: dict, kept: dict, won: dict, chosen_by: str) -> tuple[dict, str, dict]:
    """The finals' verdict: (the chosen record, why, its leave-one-group-out summary, marked
    as used for the choice). ``kept``/``won``: the configured model's and the draw's
    summaries (``finals``); the draw must score higher, a tie keeps the configured model."""
    figures = (f"left out group by group, trial {draw['trial']} {won['mean']:.3f}, the configured model "
               f"{kept['mean']:.3f}")
    if won["mean"] > kept["mean"]:
        return draw, f"{chosen_by}; {figures}", {
            **won, "used_for_selection": f"chose trial {draw['trial']} over the configured model (the higher of two)"}
    return config, (f"the configured model: trial {draw['trial']} beat it on validation ({draw['val_score']:.3f}), "
                    f"not on new groups ({figures})"), {
        **kept, "used_for_selection": f"chose the configured model over trial {draw['trial']} (the higher of two)"}


def after_refit(best: dict, train: Windows, val: Windows, n_classes: int, priors, tc, seed: int, budget: dict,
                logo: tuple[int, int], engine: Engine | None = None, out=print,
                done_seeds: list[dict] | None = None, done_logo: dict | None = None) -> dict:
    """One round on the search's engine, over one copy of the data: the chosen configuration
    refit with the seeds after ``seed`` (``[train] seeds`` - 1 of them; the refit kept is
    the first), its leave-one-group-out folds (``logo`` = (folds as ``[train] logo_folds``,
    0 for data without groups; epochs each: the refit's best epoch count). ``done_seeds``:
    those seed refits already made (the search's, of the configured model), not run again;
    ``done_logo`` likewise the folds (``finals``).

    Returns ``{"seeds": [records], "logo": report | None}``."""
    params = ModelParams(**best["params"])
    tasks = [] if done_seeds is not None else [
        TrialTask(1 + i, params, "seed", tc.epochs, seed + 1 + i, cost=False) for i in range(tc.seeds - 1)]
    logo_folds, logo_epochs = logo
    folds = done_logo if done_logo is not None else group_folds(train, val, logo_folds)
    result = {"seeds": list(done_seeds or []), "logo": folds}  # a summary, a reason, or None: kept as is
    folds = folds if isinstance(folds, GroupFolds) else None
    if folds is not None:
        tasks += fold_tasks(params, logo_epochs, seed, folds)
    if not tasks:
        return result
    kinds = [k for k, n in (("seed refit", done_seeds is None and tc.seeds > 1),
                            ("leave-one-group-out fold", folds is not None)) if n]
    engine = engine or Engine("sequential")
    out(f"train: {len(tasks)} more fits of the chosen configuration ({', '.join(kinds)}), on {engine.name}")
    records = run_round(tasks, trial_data(train, val, n_classes, priors, tc, budget, seed), folds, engine, "fit", out)
    result["seeds"] += [r for r, t in zip(records, tasks, strict=True) if t.source == "seed"]
    if folds is not None:
        result["logo"] = logo_summary([r for r, t in zip(records, tasks, strict=True) if t.source == "fold"],
                                      folds.how, logo_epochs)
    return result


def logo_summary(records: list[dict], how: str, epochs: int) -> dict:
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise GateFailed(f"leave-one-group-out: fold {failed[0]['trial']} failed ({failed[0].get('error')})")
    results = [{k: r[k] for k in ("held_out", "windows", "classes", "balanced_accuracy", "accuracy")} for r in records]
    ba = np.array([r["balanced_accuracy"] for r in results])
    return {"group_by": "group", "how": how, "epochs": int(epochs), "scores": results,
            "mean": float(ba.mean()), "sd": float(ba.std(ddof=1)) if ba.size > 1 else 0.0,
            "min": float(ba.min()), "max": float(ba.max()),
            "note": "balanced accuracy over the classes each held-out group holds"}


def seed_spread(first: dict, seed: int, more: list[dict], search_score: float, tc) -> dict:
    """The spread of the chosen configuration's validation score over ``[train] seeds``
    refits (Lones, "How to avoid ML pitfalls", 4.4), beside the search's own figure.
    ``first`` is the refit kept as the model, ``more`` the refits with the seeds after it."""
    runs = [{"seed": seed, "status": "ok", "val_score": first["val_score"], "epochs": first["epochs"]}]
    runs += [{"seed": r["seed"], "status": r["status"], "val_score": r["val_score"], "epochs": r["epochs"],
              **({"error": r["error"]} if "error" in r else {})} for r in more]
    vals = np.array([r["val_score"] for r in runs if r["status"] == "ok"], dtype=float)
    return {
        "seeds": [r["seed"] for r in runs], "runs": runs, "epochs": tc.epochs,
        "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
        "min": float(vals.min()), "max": float(vals.max()),
        "search_val_score": search_score,
        "score": f"{SCORE} on the validation split; std with ddof=1",
    }
