"""Random search (Bergstra & Bengio 2012: random beats grid when few knobs matter).

Learning rate, width, depth, kernel size, dropout and L2 are drawn at random within the
bounds of ``[train] search_*``; trial 0 is the configured model itself, so the search can
only improve on it. Each trial trains on the training split and is scored on the
validation split, never on test. Every trial is kept with its training and validation
scores, so overfitting is visible in the report.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import PipelineError
from pipeline.metrics import scores
from pipeline.model import ModelParams
from pipeline.progress import progress
from pipeline.windows import Windows

SCORE = "balanced_accuracy"
MAX_DRAWS = 200  # draws per trial before giving up on the parameter budget


def search_space(tc) -> dict:
    """The bounds, checked: what the report shows and ``sample`` draws from."""
    for lo, hi in (("search_lr_min", "search_lr_max"), ("search_width_min", "search_width_max"),
                   ("search_depth_min", "search_depth_max"),
                   ("search_kernel_min", "search_kernel_max"), ("search_l2_min", "search_l2_max")):
        a, b = getattr(tc, lo), getattr(tc, hi)
        if not 0 < a <= b:
            raise PipelineError(f"[train] {lo}/{hi}: expected 0 < {lo} <= {hi}, got {a} and {b}")
    if not 0.0 <= tc.search_dropout_max < 1.0:
        raise PipelineError(f"[train] search_dropout_max: expected 0 <= value < 1, got {tc.search_dropout_max}")
    return {
        "learning_rate": {"dist": "log-uniform", "low": tc.search_lr_min, "high": tc.search_lr_max},
        "width": {"dist": "int-uniform", "low": tc.search_width_min, "high": tc.search_width_max},
        "depth": {"dist": "int-uniform", "low": tc.search_depth_min, "high": tc.search_depth_max},
        "kernel_size": {"dist": "odd-uniform", "low": tc.search_kernel_min, "high": tc.search_kernel_max},
        "dropout": {"dist": "uniform", "low": 0.0, "high": tc.search_dropout_max},
        "l2": {"dist": "log-uniform", "low": tc.search_l2_min, "high": tc.search_l2_max},
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
    from pipeline.model import count_params

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
                f"after {MAX_DRAWS} draws", hint="lower search_width_max/search_depth_max or raise max_params")
        out.append(p)
        seen.add(p)
    return out


def run_trial(params: ModelParams, train: Windows, val: Windows, n_classes: int, priors, tc,
              epochs: int, seed: int, on_epoch=None) -> tuple[dict, object]:
    """Train one configuration from the same seed; score it on train and validation."""
    from pipeline import model as M

    M.seed_everything(seed)
    net = M.build_model(train.X.shape[1:], n_classes, params, train.X, priors)
    fitted = M.fit(net, (train.X, train.y), (val.X, val.y), params, epochs, tc.batch_size,
                   tc.patience, tc.lr_schedule, on_epoch=on_epoch)
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
    }
    fitted["proba"] = {"train": train_proba, "val": val_proba}  # scored once, reused by the caller
    return trial, (net, fitted)


def random_search(train: Windows, val: Windows, n_classes: int, priors, tc, base: ModelParams,
                  seed: int) -> dict:
    """All trials (training and validation scores), and the best by validation score."""
    import keras

    space = search_space(tc)
    trials = []
    for i, params in enumerate(progress(candidates(tc, base, train.X.shape[1:], n_classes, seed, space),
                                        "search", total=tc.trials, unit="trial")):
        trial, _ = run_trial(params, train, val, n_classes, priors, tc, tc.search_epochs, seed)
        trial["trial"] = i
        trial["source"] = "config" if i == 0 else "random"
        trials.append(trial)
        keras.backend.clear_session(free_memory=False)
    # Highest validation score; a lower validation loss breaks ties.
    best = max(trials, key=lambda t: (round(t["val_score"], 6), -t["val_loss"]))
    return {"space": space, "epochs": tc.search_epochs, "trials": trials, "best": best}
