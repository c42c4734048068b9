"""Confounding checks: something other than the signal that goes with the class, which a
model can learn instead of the task (how a sample was recorded, who recorded it, when).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from pipeline.audit.pool import Pool, cv_score, finding, id_list

MIN_CONFOUND = 10


def check_acquisition_confounding(pool: Pool, ds, acfg, seed: int) -> dict:
    """A sampling rate, device type or zero-padding that goes with one class: a model can
    learn how a sample was recorded (resampled or not, padded or not) instead of what it shows."""
    facts = {key: np.asarray(v)[pool.sample_index] for key, v in ds.meta.items()}
    padded = getattr(pool, "padded", None)
    if padded is not None and np.any(padded > 0):
        facts["zero-padded"] = np.where(padded > 0, "padded", "not padded")
    k = ds.num_classes
    found, detail = [], {}
    share = np.bincount(pool.y, minlength=k) / max(pool.y.size, 1)
    for key, values in facts.items():
        uniq, inv = np.unique(values.astype(str), return_inverse=True)
        if uniq.size < 2:
            continue
        table = np.bincount(inv * k + pool.y, minlength=uniq.size * k).reshape(uniq.size, k)
        # Per value: how much purer in its main class than the data as a whole (0: no
        # purer, 1: that class only). One value of three classes' worth of data that holds
        # only waves is a confound even though the other value mixes the rest.
        main = table.argmax(axis=1)
        purity = table.max(axis=1) / np.maximum(table.sum(axis=1), 1)
        score = (purity - share[main]) / np.maximum(1 - share[main], 1e-9)
        # Fewer than MIN_CONFOUND windows with a value (three short samples padded) say nothing.
        hit = (score >= acfg.confounding_warn) & (table.sum(axis=1) >= MIN_CONFOUND)
        detail[key] = {"windows": {str(u): dict(zip(ds.label_names, row.tolist(), strict=True))
                                   for u, row in zip(uniq, table, strict=True)},
                       "score": {str(u): round(float(sc), 4) for u, sc in zip(uniq, score, strict=True)}}
        if hit.any():
            found.append((key, float(score[hit].max()), uniq, table))
    detail["warn_at"] = acfg.confounding_warn
    if found:
        parts = []
        for key, score, uniq, table in found:
            top = ", ".join(f"{u}: " + "/".join(f"{ds.label_names[c]} {table[i, c]}" for c in range(k) if table[i, c])
                            for i, u in enumerate(uniq[:4]))
            parts.append(f"{key} ({top}; score {score:.2f})")
        return finding("acquisition_confounding", "warning", False,
                      "how the data was recorded goes with the class: " + "; ".join(parts)
                      + ": a model can learn the recording setup instead of the task; record every class with every "
                      "setup, or check the per-device scores", **detail)
    return finding("acquisition_confounding", "warning", True,
                  "sampling rate, device type and padding do not go with the class"
                  if facts else "one sampling rate, device type and no padding: nothing to check", **detail)



def _purity(labels: np.ndarray, ids_inv: np.ndarray, n_ids: int, k: int) -> float:
    """Share of windows whose label is their id's most common label."""
    table = np.bincount(ids_inv * k + labels, minlength=n_ids * k).reshape(n_ids, k)
    return float(table.max(axis=1).sum() / labels.size)


def check_group_label_confounding(pool: Pool, ds, acfg, seed: int) -> dict:
    if ds.has_groups:
        ids, what = pool.group_ids, "group"
    elif ds.has_recordings and ds.windowed:
        ids, what = pool.recording_ids, "recording"
        single = all(np.unique(pool.y[pool.recording_ids == r]).size == 1 for r in np.unique(ids))
        if single:
            return finding("group_label_confounding", "info", True,
                          "each recording carries one label, as expected; the split keeps recordings whole")
    else:
        return finding("group_label_confounding", "info", True,
                      "no subjects/devices recorded: nothing to check (a recording carries one label by design)")
    k = ds.num_classes
    uniq, inv = np.unique(ids, return_inverse=True)
    purity = _purity(pool.y, inv, uniq.size, k)
    # Chance level: the same purity with labels shuffled across samples (windows keep their
    # sample's label), so many small groups do not look predictive by themselves.
    rng = np.random.default_rng(seed)
    samples, s_inv = np.unique(pool.sample_index, return_inverse=True)
    s_label = np.zeros(samples.size, dtype=np.int64)
    s_label[s_inv] = pool.y
    chance = float(np.mean([_purity(rng.permutation(s_label)[s_inv], inv, uniq.size, k) for _ in range(20)]))
    score = (purity - chance) / (1.0 - chance) if chance < 1 else 0.0
    table = np.bincount(inv * k + pool.y, minlength=uniq.size * k).reshape(uniq.size, k)
    one_class = uniq[(table > 0).sum(axis=1) == 1]
    detail = {"by": what, "purity": round(purity, 4), "chance_purity": round(chance, 4), "score": round(score, 4),
              "warn_at": acfg.confounding_warn, f"{what}s_with_one_class": id_list(one_class)}
    if score >= acfg.confounding_warn:
        return finding("group_label_confounding", "warning", False,
                      f"{what} identity predicts the label (score {score:.2f}; 0 = no more than chance, 1 = "
                      f"determined): a model can learn who rather than what; {one_class.size} {what}(s) hold "
                      "one class only. Only a group split measures what carries over to new ones", **detail)
    return finding("group_label_confounding", "warning", True,
                  f"{what} identity does not predict the label (score {score:.2f})", **detail)



def _without_label(sample_id: str, label: str) -> str:
    """The id without the label: a leading "<label>." or "<label>/" cut, else each token
    (split on . _ - / and spaces) equal to the label dropped."""
    for sep in "./":
        if sample_id.startswith(label + sep):
            return sample_id[len(label) + 1:]
    tokens = re.split(r"([._\-/ ]+)", sample_id)
    kept = [t for t in tokens[::2] if t.casefold() != label.casefold()]
    return "_".join(kept) if len(kept) < len(tokens[::2]) else sample_id


def check_identifier_label(pool: Pool, ds, acfg, folds: int, seed: int) -> dict:
    from sklearn.tree import DecisionTreeClassifier

    tv = pool.where("train", "val")
    groups = pool.groups[tv]
    if np.unique(groups).size < 2:
        return finding("identifier_label", "info", True, "too few groups to cross-validate: not measured")
    y = pool.y[tv]
    k = np.unique(y).size
    # Edge Impulse names every file "<label>.<id>", folders "<label>/<file>", and fsdd
    # "<digit>_<speaker>_<index>": the label written in the name is not an id that happens to
    # predict it, so every token that spells the sample's label is left out before ranking.
    names = np.asarray(ds.label_names)[ds.labels]
    bare = np.asarray([_without_label(sid, n) for sid, n in zip(ds.sample_ids.tolist(), names.tolist(), strict=True)])
    id_rank = np.argsort(np.argsort(bare))  # position of each sample id in sorted order
    features = {
        "order": pool.sample_index[tv].astype(float),
        "time": pool.start_times[tv],
        "id": id_rank[pool.sample_index[tv]].astype(float),
    }
    tree = DecisionTreeClassifier(max_depth=int(np.ceil(np.log2(k))) + 3, min_samples_leaf=max(5, tv.size // 50),
                                  class_weight="balanced", random_state=seed)
    chance = 1.0 / k
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, f in features.items():
            scores[name] = round(cv_score(tree, f[:, None], y, groups, folds, seed), 4)
    limit = chance + acfg.identifier_max_above_chance
    flagged = [n for n, s in scores.items() if s > limit]
    detail = {"balanced_accuracy": scores, "chance": round(chance, 4), "warn_above": round(limit, 4),
              "model": "decision tree on one identifier, cross-validated with the pipeline's splitter"}
    if flagged:
        return finding("identifier_label", "warning", False,
                      f"the sample {' / '.join(flagged)} alone predicts the label (balanced accuracy "
                      f"{max(scores[n] for n in flagged):.2f}, chance {chance:.2f}): the data is ordered by "
                      "class, or classes were recorded at different times; a model may learn when, not what", **detail)
    return finding("identifier_label", "warning", True,
                  "sample order, id and time do not predict the label", **detail)
