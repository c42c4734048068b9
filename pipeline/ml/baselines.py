"""Dumb baselines on the same splits, scored with the same metrics as the convnet.

- ``prior`` and ``most_frequent``: scikit-learn's DummyClassifier; they ignore the input.
- ``zero_input_convnet``: the convnet trained and scored on all-zero inputs, so it can only
  learn the class prior; whatever the real convnet does above it comes from the input.
- ``linear``: flatten -> standard scaler -> logistic regression, one scikit-learn Pipeline,
  cross-validated with the group-aware splitter (training and validation scores side by
  side), then refit on the whole training split.

A baseline here is its predictions and probabilities per split; ``pipeline.train.stage`` scores
them exactly as it scores the convnet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.data.folds import cross_validate_pipeline
from pipeline.data.splits import SPLITS
from pipeline.data.windows import Windows
from pipeline.ml import model as M
from pipeline.ml.model import ModelParams


@dataclass
class Baseline:
    name: str
    description: str
    input_independent: bool
    proba: dict[str, np.ndarray]  # split -> (n, K) probabilities
    extra: dict = field(default_factory=dict)

    def predictions(self, split: str) -> np.ndarray:
        return self.proba[split].argmax(axis=1)


def flatten(X: np.ndarray) -> np.ndarray:
    return np.asarray(X).reshape(len(X), -1)


def linear_pipeline(seed: int):
    """flatten -> scaler -> logistic regression; every step fitted inside the training fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return Pipeline([
        ("flatten", FunctionTransformer(flatten)),
        ("scale", StandardScaler()),
        # Strong L2: windows have more values than there are training windows, and a weak
        # penalty only slows convergence while the model memorizes the training split.
        ("logreg", LogisticRegression(C=0.01, max_iter=500, random_state=seed)),
    ])


def _full_proba(clf, X: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with a column for every class, even those the fit never saw."""
    out = np.zeros((len(X), n_classes))
    out[:, clf.classes_] = clf.predict_proba(flatten(X))
    return out


def dummy_baselines(windows: dict[str, Windows], n_classes: int, seed: int) -> list[Baseline]:
    from sklearn.dummy import DummyClassifier

    out = []
    for strategy, text in (
        ("prior", "DummyClassifier(prior): predicts the training class prior"),
        ("most_frequent", "DummyClassifier(most_frequent): always the most frequent training class"),
    ):
        clf = DummyClassifier(strategy=strategy, random_state=seed)
        clf.fit(flatten(windows["train"].X), windows["train"].y)
        proba = {s: _full_proba(clf, windows[s].X, n_classes) for s in SPLITS}
        out.append(Baseline(strategy, text, True, proba))
    return out


def linear_baseline(windows: dict[str, Windows], groups: np.ndarray, n_classes: int,
                    folds: int, seed: int) -> Baseline:
    """Group-aware cross-validation on the training split, then a refit on all of it."""
    from threadpoolctl import threadpool_limits

    train = windows["train"]
    # One BLAS thread: the problem is small, and threads only fight over two busy cores
    # (measured: 3.4 s with two threads, 0.08 s with one, for one fit on the default data).
    with threadpool_limits(limits=1, user_api="blas"):
        cv = cross_validate_pipeline(linear_pipeline(seed), train.X, train.y, groups,
                                     n_splits=folds, seed=seed, scoring=("balanced_accuracy",))
        clf = linear_pipeline(seed).fit(train.X, train.y)
    proba = {s: _full_proba(clf, windows[s].X, n_classes) for s in SPLITS}
    extra = {"cv": {
        "folds": int(len(cv["test_balanced_accuracy"])),
        "scoring": "balanced_accuracy",
        "splitter": "GroupAwareKFold (groups kept whole)",
        "train_scores": [float(v) for v in cv["train_balanced_accuracy"]],
        "val_scores": [float(v) for v in cv["test_balanced_accuracy"]],
        "train_mean": float(np.mean(cv["train_balanced_accuracy"])),
        "val_mean": float(np.mean(cv["test_balanced_accuracy"])),
    }}
    return Baseline("linear", "Pipeline(flatten -> StandardScaler -> LogisticRegression)",
                    False, proba, extra)


ZERO_INPUT_EPOCHS = 5


def zero_input_baseline(windows: dict[str, Windows], n_classes: int, params: ModelParams,
                        priors: np.ndarray, batch_size: int, seed: int,
                        epochs: int = ZERO_INPUT_EPOCHS) -> Baseline:
    """The convnet trained on all-zero inputs: it can learn the class prior and nothing else.

    Its final bias starts at the log prior, so a few epochs show all it can do (left to
    run, its validation loss creeps down by tiny steps and early stopping never fires).
    """
    import keras

    zeros = {s: np.zeros_like(windows[s].X) for s in SPLITS}
    M.seed_everything(seed)
    net = M.build_model(zeros["train"].shape[1:], n_classes, params, zeros["train"], priors)
    result = M.fit(net, (zeros["train"], windows["train"].y), (zeros["val"], windows["val"].y),
                   params, epochs, batch_size, patience=epochs)
    proba = {s: M.predict_proba(net, zeros[s]) for s in SPLITS}
    del net
    keras.backend.clear_session(free_memory=False)
    return Baseline("zero_input_convnet", "the convnet trained and scored on all-zero inputs",
                    True, proba, {"epochs": result["epochs_run"]})
