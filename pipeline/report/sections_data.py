"""Sections 1 and 2 of the report: the data (what was split, and how) and the audit."""

from __future__ import annotations

import numpy as np

from pipeline.audit.fixes import FIXES
from pipeline.data.repairs import item_text
from pipeline.data.splits import SPLITS
from pipeline.report import plots
from pipeline.report.blocks import (
    H,
    Mark,
    Table,
    figure,
    g,
    gd,
    gl,
    gn,
    group_by,
    ids,
    not_run,
    num,
    para,
    text,
    verdict,
)
from pipeline.report.run import Run

CHECK_MEANING = {
    "group_overlap": "Is any sample, recording or subject/device in two splits? Then the model is scored on what it was trained on.",
    "cross_split_duplicates": "Is an identical window in two splits? A copy in test is not unseen data.",
    "near_duplicates": "Does a validation/test window reproduce the variation of a window of another split (a rescaled or "
                       "re-recorded copy)? Near-constant windows are look-alikes, set apart and counted.",
    "shared_segments": "Do samples of different splits share stretches of identical time steps (overlapping cuts of one recording)?",
    "acquisition_confounding": "Does a sampling rate, device type or zero-padding go with one class (a setup a model can learn)?",
    "window_overlap": "Do windows of different splits share time steps of one recording?",
    "temporal_order": "In a time split, does every test window come after every training window, with the gap?",
    "missing_classes": "Does every class appear in every split? A class missing from test is never scored.",
    "non_finite": "Is any value NaN or infinite?",
    "permutation_test": "A model trained on shuffled labels must score at chance; above chance, information crosses the folds.",
    "class_imbalance": "How unequal are the classes? Plain accuracy then rewards the majority class.",
    "group_label_confounding": "Does each subject/device mostly have one class, so identity could stand in for the label?",
    "identifier_label": "Do sample order, id or time predict the label (an illegitimate feature)?",
    "constant_channels": "Is a channel flat (a dead sensor) everywhere or in some windows?",
    "outliers": "Windows with values far outside the bulk: spikes, glitches, unit errors.",
    "within_split_duplicates": "Copies inside one split weigh double in training and in the score.",
    "label_issues": "Recordings a cross-validated model confidently puts in another class: possible wrong labels.",
    "split_optimism": "How much higher a naive random window split would score than this pipeline's split.",
}



# --------------------------------------------------------------------------- 1. the data


def repairs_row(splits: dict) -> list:
    """The first row of "At a glance" when the data were repaired: a warning, every repair's
    one line (``splits.json`` "repairs", whatever their kind)."""
    repairs = [r for r in gl(splits, "repairs") if isinstance(r, dict)]
    return ["data repairs", Mark(f"REPAIRED ({len(repairs)})", "warn"),
            [f"{text(r.get('what'))} ({num(r.get('count'))}; section 1 lists them)" for r in repairs]
            + ["[split] strict = true (--strict) refuses instead"]]


def _repairs(run: Run) -> list:
    """Every repair with every item it touched, first in section 1."""
    repairs = [r for r in gl(run.splits, "repairs") if isinstance(r, dict)]
    if not repairs:
        return []
    out: list = [H("Repairs to the data")]
    for r in repairs:
        out.append(para(Mark(f"repaired ({text(r.get('kind'))}): ", "warn"), text(r.get("what"))))
        items = r.get("items") if isinstance(r.get("items"), list) else []
        if items:
            out.append(Table(["item"], [[item_text(x)] for x in items], fold=f"{text(r.get('kind'))}: every item"))
    out.append(para("The run went on with these repairs; ", Mark("[split] strict = true", "muted"),
                    " (or --strict) refuses instead."))
    return out


def section_data(run: Run) -> list:
    """What the data are, how they were split, and what the audit found in them to look at."""
    out = _repairs(run) + _overview(run)
    groups = gd(run.audit, "summary", "groups")
    out += _class_counts(run, groups)
    out.append(H("Groups and recordings per split"))  # which group went where
    out.extend(_group_picture(run, groups))
    out += _recording_lengths(run)
    out.append(H("Example windows per class"))
    if run.data is not None:
        out.extend(_examples(run))
    else:
        out.append(para(Mark("not drawn: ", "muted"), run.data_why))
    return out + _outliers(run) + _duplicates_and_label_issues(run)


def _overview(run: Run) -> list:
    """The dataset in one paragraph, how it was split and cut, and what was left out."""
    s = run.splits
    labels = run.labels
    ds = gd(run.audit, "dataset") or gd(run.train, "dataset")
    win = gd(s, "window")
    out: list = []
    rate = gn(s, "dataset", "rate_hz")
    out.append(para(
        f"Dataset {text(g(s, 'dataset', 'name'))} ({text(g(s, 'dataset', 'source'))}), {text(g(s, 'dataset', 'kind'))}: "
        f"{num(g(ds, 'samples'))} samples, {num(g(ds, 'recordings'))} recordings, "
        f"{num(g(ds, 'groups')) if g(ds, 'groups') is not None else 'no'} subjects/devices; "
        f"{len(labels)} classes ({', '.join(labels)}); channels {', '.join(map(str, gl(s, 'dataset', 'channels'))) or 'n/a'}"
        f"{f', {rate:g} Hz' if rate else ''}."))
    how = (f"Split by {text(group_by(s))} (strategy {text(g(s, 'strategy'))}, seed {text(g(s, 'seed'))}"
           f"{', the source’s predefined test split kept' if g(s, 'predefined_test') else ''})")
    if g(ds, "windowed"):
        shape = "x".join(map(str, gl(win, "input_shape"))) or "n/a"
        out.append(para(f"{how}; every sample is one window of {shape}."))
    else:
        ms = f" ({num(gn(win, 'window_ms'), 0)} ms)" if rate else ""
        out.append(para(f"{how}, then cut into windows of {num(g(win, 'length'))} steps{ms} every "
                        f"{num(g(win, 'stride'))} steps: windows are cut after the split, from each split's own recordings."))
    for note in gl(s, "notes"):
        out.append(para(Mark("note: ", "warn"), str(note)))
    for reason, excluded in gd(s, "excluded").items():
        out.append(para(Mark("excluded: ", "warn"), f"{reason}: {ids(excluded if isinstance(excluded, list) else [])}"))
    if gd(s, "skipped"):
        out.append(para("Skipped while loading: " + ", ".join(f"{k}: {v}" for k, v in gd(s, "skipped").items())))
    if run.data is None:
        out.append(para(Mark("Figures drawn from the raw data are left out: ", "warn"), run.data_why + "."))
    return out


def _class_counts(run: Run, groups: dict) -> list:
    """Samples, recordings, groups and windows per split, and the windows of each class."""
    s, summ, labels = run.splits, gd(run.audit, "summary"), run.labels
    counts = gd(summ, "class_counts") or gd(run.train, "split", "class_counts")
    if not counts and run.data is not None:
        counts = {sp: {n: int(c) for n, c in zip(labels, np.bincount(run.data.windows[sp].y, minlength=len(labels)), strict=True)}
                  for sp in SPLITS}
    rows = []
    for sp in SPLITS:
        rows.append([sp, num(g(summ, "samples", sp, default=len(gl(s, "splits", sp)) or None)),
                     num(g(summ, "recordings", sp)),
                     num(len(gl(groups, sp))) if groups else "n/a",
                     num(g(summ, "windows", sp, default=g(s, "windows", sp))),
                     *[num(g(counts, sp, n)) for n in labels]])
    out = [H("Class counts per split"),
           Table(["split", "samples", "recordings", "groups", "windows", *labels], rows,
                 "windows per class; the audit's counts (audit.json summary)")]
    if counts:
        out.append(figure(plots.class_counts, counts, labels, alt="windows per class and split"))
    return out


def _recording_lengths(run: Run) -> list:
    out: list = [H("Recording lengths")]
    lengths = gd(run.audit, "summary", "recording_lengths")
    if lengths:
        rows = []
        for part in ("all", *SPLITS):
            st = gd(lengths, part)
            sec = gd(st, "seconds")
            rows.append([part, num(g(st, "min")), num(gn(st, "median"), 1), num(g(st, "max")),
                         f"{num(gn(sec, 'min'), 2)} .. {num(gn(sec, 'max'), 2)}" if sec else "n/a"])
        out.append(Table(["split", "min steps", "median", "max steps", "seconds"], rows))
    elif run.audit is None:
        out.append(not_run("make train", "audit.json holds the length statistics"))
    if run.data is not None and not run.data.dataset.windowed:
        ds_ = run.data.dataset
        unit = "s" if ds_.rate_hz else "steps"
        scale = ds_.rate_hz or 1.0
        by_split = {sp: ds_.lengths[run.data.plan.indices[sp]] / scale for sp in SPLITS}
        out.append(figure(plots.recording_lengths, by_split, unit, alt="histogram of recording lengths by split"))
    elif run.data is not None:
        out.append(para(f"Every sample is one window ({'x'.join(map(str, gl(run.splits, 'window', 'input_shape')))}): "
                        "no recordings to cut."))
    return out


def _outliers(run: Run) -> list:
    """The audit's worst outlier windows, as a table and (with the data) drawn."""
    out: list = [H("Worst outliers")]
    worst = [w for w in gl(run.audit, "summary", "worst_outliers") if isinstance(w, dict)]
    if worst:
        out.append(Table(["window", "split", "robust z"],
                         [[text(w.get("window")), text(w.get("split")), num(gn(w, "z"), 1)] for w in worst],
                         f"largest robust z-score of any value (the audit flags z > "
                         f"{num(gn(run.check.get('outliers'), 'detail', 'threshold_z'), 0)})"))
        if run.data is not None:
            out.extend(_outlier_windows(run, worst))
    else:
        out.append(para("none found" if run.audit is not None else "n/a (audit.json not found)"))
    return out


def _duplicates_and_label_issues(run: Run) -> list:
    out: list = [H("Duplicates")]
    dup = gd(run.audit, "summary", "duplicates")
    within = [d for d in gl(dup, "within_split") if isinstance(d, dict)]
    if within:
        out.append(Table(["split", "recordings (identical windows)", "windows"],
                         [[text(d.get("split")), " = ".join(dict.fromkeys(map(str, gl(d, "recordings")))),
                           num(g(d, "windows"))] for d in within], "copies inside one split"))
    cross = gl(dup, "cross_split")
    out.append(para(f"Across splits: {ids(cross)}." if cross or dup else
                    ("No duplicates found." if run.audit is not None else "n/a (audit.json not found)")))
    issues = [i for i in gl(run.check.get("label_issues"), "detail", "issues") if isinstance(i, dict)]
    if issues:
        out.append(H("Recordings that look like another class"))
        out.append(Table(["recording", "split", "label", "looks like", "p(label)", "p(looks like)"],
                         [[text(i.get("recording")), text(i.get("split")), text(i.get("label")),
                           text(i.get("predicted")), num(gn(i, "p_label")), num(gn(i, "p_predicted"))]
                          for i in issues[:20]],
                         text(g(run.check.get("label_issues"), "detail", "how", default="")),
                         fold="the recordings" if len(issues) > 8 else ""))
    return out


def _group_picture(run: Run, groups: dict) -> list:
    s = run.splits
    by = text(group_by(s))
    if run.data is not None:
        ds, plan = run.data.dataset, run.data.plan
        if plan.group_by == "sample":
            return [para("No recordings or subjects/devices in this data: samples were split at random, "
                         "so there is no grouping to keep whole.")]
        key = ds.group_ids if plan.group_by == "group" else ds.recording_ids
        split_of, recs = {}, {}
        for sp in SPLITS:
            for i in plan.indices[sp]:
                split_of.setdefault(key[i], sp)
                recs.setdefault(key[i], set()).add(ds.recording_ids[i])
        names = sorted(split_of, key=lambda n: (SPLITS.index(split_of[n]), n))
        counts = [len(recs[n]) for n in names] if plan.group_by == "group" else None
        out = [figure(plots.group_splits, names, [split_of[n] for n in names], counts, plan.group_by,
                      alt=f"each {plan.group_by} coloured by the split it went to")]
        by_split = {sp: [n for n in names if split_of[n] == sp] for sp in SPLITS}
    elif groups:
        names = [(str(n), sp) for sp in SPLITS for n in gl(groups, sp)]
        out = [figure(plots.group_splits, [n for n, _ in names], [sp for _, sp in names], None, by,
                      alt="each group coloured by the split it went to")]
        by_split = {sp: [str(n) for n in gl(groups, sp)] for sp in SPLITS}
    else:
        sizes = ", ".join(f"{sp}: {len(gl(s, 'splits', sp))} samples" for sp in SPLITS)
        return [para(f"Split unit: {by}; {sizes}.")]
    rows = [[sp, num(len(by_split[sp])), ids(by_split[sp], 20)] for sp in SPLITS]
    out.append(Table(["split", f"{by}s", "which"], rows))
    return out


def _representative(X: np.ndarray) -> int:
    """The window whose spread is closest to its class's median spread: typical, not an outlier."""
    spread = X.reshape(len(X), -1).std(axis=1)
    return int(np.argmin(np.abs(spread - np.median(spread))))


def _examples(run: Run) -> list:
    w = run.data.windows["train"]
    ds = run.data.dataset
    panels = []
    for k, name in enumerate(run.labels[:16]):
        members = np.flatnonzero(w.y == k)
        if members.size:
            i = members[_representative(w.X[members])]
            panels.append((f"{name}\n{w.window_ids[i]}", w.X[i]))
    out = []
    if len(run.labels) > 16:
        out.append(para(f"The first 16 of {len(run.labels)} classes."))
    if panels:
        out.append(figure(plots.windows_grid, panels, list(ds.channel_names), ds.rate_hz,
                          "A typical training window of each class (raw values, before normalization)",
                          alt="one typical training window per class"))
    return out


def _outlier_windows(run: Run, worst: list[dict]) -> list:
    position = {}
    for sp in SPLITS:
        w = run.data.windows[sp]
        for i, wid in enumerate(w.window_ids.tolist()):
            position[wid] = (sp, i)
    panels, seen = [], set()
    for o in worst:
        wid = str(o.get("window"))
        rec = wid.rsplit("@", 1)[0]
        if wid in position and rec not in seen:
            seen.add(rec)
            sp, i = position[wid]
            panels.append((f"{wid}\n{sp}, z = {num(gn(o, 'z'), 1)}", run.data.windows[sp].X[i]))
        if len(panels) == 4:
            break
    if not panels:
        return []
    ds = run.data.dataset
    return [figure(plots.windows_grid, panels, list(ds.channel_names), ds.rate_hz,
                   "The worst outlier windows (one per recording)", alt="the worst outlier windows")]


# --------------------------------------------------------------------------- 2. the audit


def section_audit(run: Run) -> list:
    if run.audit is None:
        return [not_run("make train (or tinyml audit)", "audit.json is written by the audit")]
    a = run.audit
    checks = [c for c in gl(a, "checks") if isinstance(c, dict)]  # failed errors first (the audit's order)
    err, warn = gl(a, "errors_failed"), gl(a, "warnings_failed")
    out = [para(f"{len(checks)} checks: ",
                Mark(f"{len(err)} error(s) failed", "bad" if err else "good"), ", ",
                Mark(f"{len(warn)} warning(s)", "warn" if warn else "good"),
                ". An error-level finding stops the train stage unless --allow-leakage is given.")]
    if g(a, "override"):
        out.append(para(Mark("Overridden with --allow-leakage: ", "bad"),
                        f"{ids(gl(a, 'override', 'checks'))}. {text(g(a, 'override', 'note'))}"))
    rows = []
    for c in checks:
        sev = str(c.get("severity", "n/a"))
        cid = str(c.get("id", "?"))
        meaning = CHECK_MEANING.get(cid, "")
        if not c.get("passed") and cid in FIXES:
            meaning += f" Fix: {FIXES[cid]}."
        rows.append([verdict(c.get("passed"), "ok", "FAIL" if sev == "error" else "flagged", sev), sev, cid,
                     text(c.get("message")), meaning])
    out.append(Table(["verdict", "severity", "check", "finding", "what it means"], rows,
                     "failed errors first, then failed warnings, then the rest (audit.json)"))
    return out
