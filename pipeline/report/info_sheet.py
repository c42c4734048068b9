"""Section 7 of the report: the model info sheet on leakage (Kapoor & Narayanan 2023), each
row answered from the run's own records, and the looks at the test set."""

from __future__ import annotations

import numpy as np

from pipeline.data.splits import SPLITS
from pipeline.report.blocks import (
    H,
    Mark,
    Table,
    g,
    gd,
    gl,
    gn,
    group_by,
    group_counts,
    ids,
    num,
    para,
    text,
)
from pipeline.report.run import Run

# --------------------------------------------------------------------------- 7. model info sheet


NOT_RECORDED = Mark("not recorded", "muted")


def _check_line(run: Run, cid: str) -> tuple:
    """One audit check as a fact: its verdict, its id and what it found."""
    c = run.check.get(cid)
    if not c:
        return (NOT_RECORDED, f": {cid} (no such check in audit.json)")
    if c.get("passed"):
        state = Mark("passed", "good")
    else:
        state = Mark("FAILED", "bad") if c.get("severity") == "error" else Mark("flagged", "warn")
    return (state, f" {cid}: {text(c.get('message'))}")


def _normalization(run: Run) -> tuple:
    """Is the model's input normalization the training split's? Recomputed from the data when it loads."""
    mean = [v for v in gl(run.train, "model", "normalization", "mean") if isinstance(v, (int, float))]
    if not mean:
        return (NOT_RECORDED, ": the model's normalization statistics")
    stored = np.asarray(mean, dtype=np.float64)
    shown = ", ".join(f"{v:.3g}" for v in stored[:6])
    if run.data is None:
        return (Mark("not checked", "muted"), f": the input normalization (mean {shown}) is a layer inside the "
                f"model, fitted in the train stage; not compared with the data ({run.data_why})")
    w = run.data.windows
    if w["train"].X.shape[-1] != stored.size:
        return (Mark("not comparable", "warn"), f": the model normalizes {stored.size} channels, the data has "
                f"{w['train'].X.shape[-1]}")
    axes = tuple(range(w["train"].X.ndim - 1))
    train_mean = w["train"].X.astype(np.float64).mean(axis=axes)
    all_mean = np.concatenate([w[sp].X for sp in SPLITS]).astype(np.float64).mean(axis=axes)
    d_train = float(np.max(np.abs(stored - train_mean)))
    d_all = float(np.max(np.abs(stored - all_mean)))
    tol = 1e-3 * (1.0 + float(np.max(np.abs(stored))))
    if d_train <= tol < d_all:
        return (Mark("training split only", "good"), f": the input normalization is a layer inside the model; its "
                f"per-channel mean ({shown}) matches the training windows (max |diff| {d_train:.1g}), not the mean "
                f"over all splits (max |diff| {d_all:.2g})")
    if d_train <= tol:
        return (Mark("training split", "good"), f": the normalization mean ({shown}) matches the training windows "
                f"(max |diff| {d_train:.1g}); the mean over all splits is as close ({d_all:.1g}), so this check "
                "cannot tell them apart")
    return (Mark("does not match", "bad"), f": the normalization mean ({shown}) is not the training windows' "
            f"(max |diff| {d_train:.3g}; over all splits {d_all:.3g}): the model may not come from this split")


def section_info_sheet(run: Run) -> list:
    q = run.quantize
    override = [para(Mark("OVERRIDE: ", "bad"), "the deployed int8 model missed its accuracy gate(s) "
                     f"({', '.join(map(str, gl(q, 'override', 'failed_gates')))}) and was exported with --accept-drop")] \
        if gd(q, "override") else []
    summ = gd(run.audit, "summary")
    test_groups = len(gl(summ, "groups", "test")) if gd(summ, "groups") else None
    by = text(group_by(run.splits))
    no_test, pre, feat, dups = _l1(run, by, test_groups)
    illegit = [_check_line(run, "identifier_label"), _check_line(run, "group_label_confounding"),
               _check_line(run, "constant_channels"),
               (NOT_RECORDED, ": whether any input is a proxy for the label beyond these checks")]
    temporal, nonind, bias = _l3(run, by, test_groups)
    rows = [
        [kind("L1.1", "No test set", "is there a held-out test set, untouched by training and selection?"), no_test],
        [kind("L1.2", "Pre-processing on train and test together", "were preprocessing statistics fitted on training data only?"), pre],
        [kind("L1.3", "Feature selection on train and test together", "were features or hyperparameters chosen with the test set?"), feat],
        [kind("L1.4", "Duplicates", "are copies of a sample in both training and test?"), dups],
        [kind("L2", "Illegitimate features", "could the model use an input it will not have, or a proxy for the label?"), illegit],
        [kind("L3.1", "Temporal leakage", "is test data from before training data where that matters?"), temporal],
        [kind("L3.2", "Non-independence between train and test", "do they share subjects, recordings or overlapping windows?"), nonind],
        [kind("L3.3", "Sampling bias in the test distribution", "is the test set drawn like the deployment data?"), bias],
    ]
    out: list = [*override, para("After Kapoor & Narayanan (2023), “Leakage and the reproducibility crisis in machine-learning-based "
                      "science”: each row is answered from this run's own records; where they do not answer, it says "
                      "“not recorded”.")]
    override = g(run.audit, "override")
    if override:
        out.append(para(Mark("Leakage findings were overridden (--allow-leakage): ", "bad"),
                        f"{ids(gl(override, 'checks'))}; every score of this run is suspect."))
    out.append(Table(["leakage type", "what this run did"], rows))
    return out + _test_looks(run)


def _test_looks(run: Run) -> list:
    """Every line of test_ledger.jsonl: which stage scored the test split, for what, on which split."""
    s = run.splits
    looks, _ = run.test_looks
    out: list = [H(f"Looks at the test set: {len(looks)}")]
    if run.ledger:
        test_sha = g(s, "test_sha256")
        rows = []
        for i, e in enumerate(run.ledger, 1):
            if e.get("corrupt"):
                rows.append([str(i), Mark("torn or corrupt line", "warn"), "", "", "", "", "", "", ""])
                continue
            same = e.get("test_sha256") == test_sha
            rows.append([str(i), text(e.get("time")), text(e.get("stage")), text(e.get("purpose")), text(e.get("look")),
                         text(e.get("model_sha256"))[:12],
                         Mark("this split", "good") if same else Mark("another split", "bad"),
                         num(gn(e, "metrics", "balanced_accuracy")),
                         Mark(text(e.get("warning")), "warn") if e.get("warning") else ""])
        out.append(Table(["#", "time", "stage", "purpose", "look", "model", "test split", "balanced acc.", "warning"],
                         rows, "test_ledger.jsonl: one line per scoring of the test split"))
    else:
        out.append(para("test_ledger.jsonl is empty or missing: the test split has not been scored."))
    return out


def kind(code: str, name: str, question: str) -> tuple:
    """A leakage type as the table's first cell: its code and name, and the question it asks."""
    return (Mark(f"{code} {name}", "strong"), f" — {question}")


def _l1(run: Run, by: str, test_groups: int | None) -> tuple[list, list, list, list]:
    """L1: no test set, pre-processing and feature selection on both, duplicates."""
    s, t, q = run.splits, run.train, run.quantize
    summ = gd(run.audit, "summary")
    looks, repeated = run.test_looks
    score = g(t, "search", "space", "score")
    no_test = [
        (Mark("yes", "good"), f": {num(g(s, 'windows', 'test'))} test windows from {len(gl(s, 'splits', 'test'))} samples"
         f"{f' and {test_groups} {by}s' if test_groups is not None else ''}, held out before training "
         f"(splits.json, strategy {text(g(s, 'strategy'))})"),
        f"its content SHA-256 ({text(g(s, 'test_sha256'))[:12]}…) is checked by every later stage",
        (f"model choices scored on validation ({score})" if score else (NOT_RECORDED, ": how models were chosen")),
        (Mark(f"{len(looks)} look(s)", "warn" if repeated else "good"), " at the test set in test_ledger.jsonl"
         + (f"; repeated for: {', '.join(f'{p} ({n})' for p, n in repeated.items())}" if repeated else ", one per purpose")),
    ]
    calib = gd(q, "calibration")
    pre = [_normalization(run) if t is not None else (NOT_RECORDED, ": make train has not run"),
           f"windows are cut after the split, from each split's own recordings (unit: {by})"]
    if calib:
        split = text(g(calib, "split"))
        pre.append((Mark(f"{split} split", "good" if split == "train" else "bad"),
                    f": int8 calibration used {num(g(calib, 'windows'))} windows of it"))
    linear = g(t, "baselines", "linear", "description")
    if linear and gd(t, "baselines", "linear", "cv"):
        pre.append(f"the linear baseline ({linear}) is refit inside each cross-validation fold")
    trials = gl(t, "search", "trials")
    how = g(run.check.get("label_issues"), "detail", "how")
    feat = ["no feature selection step: the convnet learns from the raw windows",
            (f"{len(trials)} random-search trials, scored on the validation split only" if trials
             else (NOT_RECORDED, ": the search")),
            "the audit's model-based checks cross-validate on train+val" + (f" ({how})" if how else "")]
    within = [d for d in gl(summ, "duplicates", "within_split") if isinstance(d, dict)]
    dups = [_check_line(run, "cross_split_duplicates"), _check_line(run, "near_duplicates")]
    if within:
        dups.append("within-split copies: " + ids([" = ".join(dict.fromkeys(map(str, gl(d, "recordings")))) for d in within], 6))
    return no_test, pre, feat, dups


def _l3(run: Run, by: str, test_groups: int | None) -> tuple[list, list, list]:
    """L3: temporal leakage, non-independence of train and test, sampling bias in test."""
    s = run.splits
    summ = gd(run.audit, "summary")
    if g(s, "strategy") == "time":
        temporal = [_check_line(run, "temporal_order"), _check_line(run, "window_overlap"),
                    f"gap between splits: {text(g(s, 'sizes', 'gap_s'))} s"]
    else:
        temporal = [(Mark("n/a", "muted"), f": temporal_order ({text(g(s, 'strategy'))} split, not chronological)"),
                    _check_line(run, "window_overlap"),
                    (NOT_RECORDED, ": whether deployment sees data from before the training period")]
    groups = group_counts(gd(run.train, "split"))
    nonind = [f"split by {by}: all windows of a {by} stay in one split",
              _check_line(run, "group_overlap"), _check_line(run, "permutation_test"),
              (f"intervals resample whole {by}s (test: {num(g(groups, 'test'))})" if groups
               else (NOT_RECORDED, ": how intervals were computed")),
              _check_line(run, "split_optimism")]
    bias = [f"predefined test split: {'yes (from the source)' if g(s, 'predefined_test') else 'no'}",
            _class_shift(gd(summ, "class_counts")), _check_line(run, "missing_classes"),
            (f"test holds {test_groups} {by}(s)" if test_groups is not None else (NOT_RECORDED, f": test {by}s")),
            f"samples excluded from every split: {sum(len(v) for v in gd(s, 'excluded').values() if isinstance(v, list))}",
            (NOT_RECORDED, ": whether the data represent the deployment population")]
    return temporal, nonind, bias


def _class_shift(counts: dict) -> str:
    """Largest gap between a class's share in a split and its share overall."""
    if not counts:
        return "class distribution per split: not recorded"
    names = sorted({n for sp in SPLITS for n in gd(counts, sp)})
    per = {sp: np.array([gn(counts, sp, n) or 0 for n in names], dtype=float) for sp in SPLITS}
    total = sum(per.values())
    if total.sum() == 0:
        return "class distribution per split: empty"
    overall = total / total.sum()
    gaps = []
    for sp in SPLITS:
        share = per[sp] / per[sp].sum() if per[sp].sum() else per[sp]
        i = int(np.argmax(np.abs(share - overall)))
        gaps.append(f"{sp} {names[i]} {share[i]:.0%} vs {overall[i]:.0%}")
    return "largest class-share gap per split vs overall: " + ", ".join(gaps)
