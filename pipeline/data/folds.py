"""Cross-validation folds that keep groups whole (what the split keeps whole stays whole in
every fold too): the fold maker the splitter holds out with, a scikit-learn CV object, and
a whole-pipeline cross-validation for the baselines and the audit's model-based checks."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import BaseCrossValidator, GroupKFold, StratifiedGroupKFold


def group_folds(n_folds: int, y: np.ndarray, seed: int):
    """Folds that keep groups whole, stratified by class when any class can fill every fold.

    StratifiedGroupKFold raises when every class has fewer members than folds (tiny data);
    then the folds are only shuffled, and the caller still prefers folds with every class.
    """
    if np.unique(y, return_counts=True)[1].max() >= n_folds:
        return StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)


class GroupAwareKFold(BaseCrossValidator):
    """K folds that keep groups whole, stratified by class as far as groups allow.

    A scikit-learn CV object: pass it as ``cv=`` anywhere. Give the groups at construction
    (``GroupAwareKFold(4, groups=windows.group_ids)``) or to ``split``.
    """

    def __init__(self, n_splits: int = 4, groups=None, seed: int = 0):
        self.n_splits = n_splits
        self.groups = groups
        self.seed = seed

    def get_n_splits(self, X=None, y=None, groups=None):
        g = self.groups if self.groups is not None else groups
        if g is None:
            return self.n_splits
        return min(self.n_splits, np.unique(np.asarray(g)).size)

    def split(self, X, y=None, groups=None):
        g = np.asarray(self.groups if self.groups is not None else groups)
        if g.ndim == 0:
            raise ValueError("GroupAwareKFold needs groups: pass them at construction or to split()")
        if len(g) != len(X):
            raise ValueError(f"groups has {len(g)} entries for {len(X)} samples")
        n = self.get_n_splits(X, y, g)
        if n < 2:
            raise ValueError(f"GroupAwareKFold needs at least 2 groups, got {np.unique(g).size}")
        y = np.zeros(len(X)) if y is None else np.asarray(y)
        yield from group_folds(n, y, self.seed).split(np.zeros(len(X)), y, g)


def cross_validate_pipeline(estimator, X, y, groups, n_splits: int = 4, seed: int = 0,
                            scoring=("balanced_accuracy",), n_jobs: int | None = None) -> dict:
    """Cross-validate a whole scikit-learn Pipeline, refit inside each fold (ESL 7.10.2),
    with groups kept whole and training scores beside validation scores."""
    from sklearn.model_selection import cross_validate

    X2 = np.asarray(X).reshape(len(X), -1)
    cv = GroupAwareKFold(n_splits, groups=groups, seed=seed)
    return cross_validate(estimator, X2, y, cv=cv, scoring=list(scoring),
                          return_train_score=True, n_jobs=n_jobs, error_score="raise")
