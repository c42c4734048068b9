"""The report: one page a person can read (``report.html``) and the same figures in text (``report.md``).

It reads only the run directory: ``splits.json``, ``audit.json``, ``train_report.json``,
``quantize_report.json``, ``device_report.json``, ``device_eval.jsonl``, ``test_ledger.jsonl``
and ``config.toml``. With the config it reloads the dataset (the loaders are pure and fast) to
draw what the reports only count: example windows, recording lengths, the worst outliers.
If the dataset cannot be reloaded, those figures are left out and the page says why.

Sections follow the questions a skeptical reader asks, in order: the data, the audit,
baselines against the convnet, training, quantization, the device, and a model info sheet
on leakage (Kapoor & Narayanan 2023) with the count of looks at the test set. A stage that
has not run leaves its section saying which command runs it.

The page is self-contained (figures are base64 PNGs, no external CSS, JS or fonts), and is
built whole in memory before either file is written: a malformed artifact is a one-line
PipelineError naming the file, never a half-written page.
"""

from __future__ import annotations

import base64
import html
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import read_json, write_text
from pipeline.core.errors import PipelineError
from pipeline.ml.metrics import METRICS as HEADLINE
from pipeline.data.splits import SPLITS

HTML = "report.html"
MD = "report.md"
SOURCES = {  # artifact -> the command that writes it
    "splits.json": "make train (or tinyml audit)",
    "audit.json": "make train (or tinyml audit)",
    "train_report.json": "make train",
    "quantize_report.json": "make quantize",
    "device_report.json": "make flash",
}

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


# --------------------------------------------------------------------------- reading artifacts safely


def g(doc, *keys, default=None):
    """``doc[k1][k2]...``, or ``default`` when a key is missing or a level is not a dict/list."""
    for k in keys:
        if isinstance(doc, dict) and k in doc:
            doc = doc[k]
        elif isinstance(doc, list) and isinstance(k, int) and -len(doc) <= k < len(doc):
            doc = doc[k]
        else:
            return default
    return default if doc is None else doc


def gd(doc, *keys) -> dict:
    v = g(doc, *keys)
    return v if isinstance(v, dict) else {}


def gl(doc, *keys) -> list:
    v = g(doc, *keys)
    return v if isinstance(v, list) else []


def isnum(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def gn(doc, *keys) -> float | None:
    v = g(doc, *keys)
    return v if isnum(v) else None


def num(v, digits: int = 3) -> str:
    if not isnum(v):
        return "n/a"
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


def with_ci(m, key: str, digits: int = 3) -> str:
    """``0.912 [0.884, 0.936]``: the value and its 95% interval, or n/a."""
    value = gn(m, key)
    if value is None:
        return "n/a"
    note = g(m, "uncertainty", "text", key)
    if isinstance(note, str):
        # Few groups (no interval) or no errors (an exact binomial bound), as the metrics say.
        return f"{value:.{digits}f} {note}"
    ci = gl(m, "ci95", key)
    if len(ci) == 2 and all(isnum(c) for c in ci):
        return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return f"{value:.{digits}f}"


def pct(v, digits: int = 1) -> str:
    return f"{v:.{digits}%}" if isnum(v) else "n/a"


def nbytes(v) -> str:
    return f"{int(v):,} B ({v / 1024:,.1f} KiB)" if isnum(v) else "n/a"


def text(v) -> str:
    return "n/a" if v is None or v == "" else str(v)


def ids(values, limit: int = 12) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "") if values else "none"


# --------------------------------------------------------------------------- page blocks


@dataclass
class Mark:
    """A verdict in running text: ``bad``, ``warn``, ``good`` or ``muted``."""

    text: str
    kind: str


@dataclass
class P:
    parts: list  # str or Mark


@dataclass
class H:
    text: str


@dataclass
class Table:
    head: list[str]
    rows: list[list]  # cells: str, Mark, a tuple of them (one line) or a list of them (bullets)
    caption: str = ""
    fold: str = ""  # when set, the table folds away in HTML behind this label


@dataclass
class Img:
    png: bytes
    alt: str


@dataclass
class Section:
    number: int
    anchor: str
    title: str
    blocks: list = field(default_factory=list)


def para(*parts) -> P:
    return P(list(parts))


def not_run(command: str, what: str = "") -> P:
    return para(Mark(f"not run yet: {command}", "muted"), f" ({what})" if what else "")


def verdict(passed, good: str = "ok", bad: str = "FAIL", severity: str = "error") -> Mark:
    if passed is None:
        return Mark("n/a", "muted")
    if passed:
        return Mark(good, "good")
    return Mark(bad, "bad" if severity == "error" else "warn")


def figure(draw, *args, alt: str):
    """A figure, or a line saying why it could not be drawn (a page without one plot beats no page)."""
    try:
        return Img(draw(*args), alt)
    except Exception as exc:  # matplotlib raises many types on odd data
        return para(Mark(f"figure not drawn ({alt}): {type(exc).__name__}: {exc}", "muted"))


# --------------------------------------------------------------------------- the run


@dataclass
class Data:
    """The dataset reloaded with the run's split: what the figures of section 1 are drawn from."""

    dataset: object
    plan: object
    windows: dict


@dataclass
class Run:
    dir: Path
    splits: dict
    audit: dict | None
    train: dict | None
    quantize: dict | None
    device: dict | None
    device_lines: list[dict]
    device_torn: int
    ledger: list[dict]
    config: object | None
    data: Data | None
    data_why: str

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in (gl(self.splits, "dataset", "label_names") or gl(self.train, "labels")
                                 or gl(self.quantize, "labels"))]

    @cached_property
    def check(self) -> dict:
        return {c.get("id"): c for c in gl(self.audit, "checks") if isinstance(c, dict)}

    @cached_property
    def test_looks(self) -> tuple[list[dict], dict[str, int]]:
        """The whole ledger entries, and the purposes the test split was scored for more than once."""
        looks = [e for e in self.ledger if not e.get("corrupt")]
        purposes = Counter(str(e.get("purpose")) for e in looks)
        return looks, {p: n for p, n in purposes.items() if n > 1}


# Top-level keys each report must hold as an object when present: a list or a string there is
# a damaged or foreign file, said as such rather than rendered as a page of n/a.
SHAPES = {
    "splits.json": ("dataset", "splits", "window", "windows"),
    "audit.json": ("summary", "dataset", "split"),
    "train_report.json": ("metrics", "baselines", "sanity", "search", "history", "model", "split"),
    "quantize_report.json": ("calibration", "conversion", "validation", "test", "memory", "board", "macs"),
    "device_report.json": ("metrics", "agreement_with_host_int8", "timing_reported_by_device", "device"),
}
LISTS = {"audit.json": ("checks",)}


def _read(run_dir: Path, name: str, required: bool = False) -> dict | None:
    path = run_dir / name
    if not path.exists():
        if required:
            raise PipelineError(f"{path}: not found", hint=f"run {SOURCES[name]} first")
        return None
    doc = read_json(path, name)
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: expected a JSON object, got a {type(doc).__name__}",
                            hint=f"the file is damaged or from another tool; rerun {SOURCES[name]}")
    for key in SHAPES.get(name, ()):
        if key in doc and doc[key] is not None and not isinstance(doc[key], dict):
            raise PipelineError(f"{path}: '{key}' is a {type(doc[key]).__name__}, expected an object",
                                hint=f"the file is damaged or from another version; rerun {SOURCES[name]}")
    for key in LISTS.get(name, ()):
        if key in doc and not isinstance(doc[key], list):
            raise PipelineError(f"{path}: '{key}' is a {type(doc[key]).__name__}, expected a list",
                                hint=f"the file is damaged or from another version; rerun {SOURCES[name]}")
    return doc


def load_run(run_dir: str | Path) -> Run:
    """Every artifact of the run that exists; ``splits.json`` must."""
    from pipeline.device.scoring import RESULTS, read_results
    from pipeline.core.ledger import read_ledger

    run_dir = Path(run_dir)
    splits = _read(run_dir, "splits.json", required=True)
    audit = _read(run_dir, "audit.json")
    train = _read(run_dir, "train_report.json")
    if train is not None and "trials" in gd(train, "search") and not isinstance(train["search"]["trials"], list):
        raise PipelineError(f"{run_dir / 'train_report.json'}: 'search.trials' is not a list",
                            hint="the file is damaged or from another version; rerun make train")
    quantize = _read(run_dir, "quantize_report.json")
    device = _read(run_dir, "device_report.json")
    lines, torn = read_results(run_dir / RESULTS)
    ledger = [e if isinstance(e, dict) else {"corrupt": True} for e in read_ledger(run_dir)]
    config = None
    if (run_dir / "config.toml").exists():
        from pipeline.core.config import load_config

        config = load_config(run_dir / "config.toml")  # a malformed file raises, naming it
    data, why = _load_data(splits, config)
    return Run(run_dir, splits, audit, train, quantize, device, lines, torn, ledger, config, data, why)


def _load_data(splits: dict, config) -> tuple[Data | None, str]:
    """The dataset named by the run's config, split as ``splits.json`` says; or why not."""
    if config is None:
        return None, "config.toml not found (make train writes it), so the dataset is not reloaded"
    from pipeline.data.load import dataset_from_config
    from pipeline.data.splits import split_from_manifest

    spec = config.data.dataset
    try:
        dataset = dataset_from_config(config)
    except Exception as exc:  # any loader error: the page is drawn without the raw data
        return None, f"the dataset {spec!r} could not be loaded ({_one_line(exc)})"
    if dataset.source != g(splits, "dataset", "source"):
        return None, (f"the dataset {spec!r} is now {dataset.source!r}, but splits.json was made from "
                      f"{g(splits, 'dataset', 'source')!r}")
    try:
        plan, windows = split_from_manifest(dataset, splits, "splits.json")
    except Exception as exc:  # a changed dataset: the page is drawn without the raw data
        return None, f"the dataset {spec!r} no longer matches splits.json ({_one_line(exc)})"
    return Data(dataset, plan, windows), ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())[:300]


# --------------------------------------------------------------------------- 1. the data


def section_data(run: Run) -> list:
    from pipeline.report import plots

    s, a = run.splits, run.audit
    summ = gd(a, "summary")
    labels = run.labels
    ds = gd(a, "dataset") or gd(run.train, "dataset")
    win = gd(s, "window")
    out: list = []
    rate = gn(s, "dataset", "rate_hz")
    out.append(para(
        f"Dataset {text(g(s, 'dataset', 'name'))} ({text(g(s, 'dataset', 'source'))}), {text(g(s, 'dataset', 'kind'))}: "
        f"{num(g(ds, 'samples'))} samples, {num(g(ds, 'recordings'))} recordings, "
        f"{num(g(ds, 'groups')) if g(ds, 'groups') is not None else 'no'} subjects/devices; "
        f"{len(labels)} classes ({', '.join(labels)}); channels {', '.join(map(str, gl(s, 'dataset', 'channels'))) or 'n/a'}"
        f"{f', {rate:g} Hz' if rate else ''}."))
    how = (f"Split by {text(g(s, 'unit'))} (strategy {text(g(s, 'strategy'))}, seed {text(g(s, 'seed'))}"
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

    # Counts per split.
    counts = gd(summ, "class_counts") or gd(run.train, "split", "class_counts")
    if not counts and run.data is not None:
        counts = {sp: {n: int(c) for n, c in zip(labels, np.bincount(run.data.windows[sp].y, minlength=len(labels)), strict=True)}
                  for sp in SPLITS}
    groups = gd(summ, "groups")
    rows = []
    for sp in SPLITS:
        rows.append([sp, num(g(summ, "samples", sp, default=len(gl(s, "splits", sp)) or None)),
                     num(g(summ, "recordings", sp)),
                     num(len(gl(groups, sp))) if groups else "n/a",
                     num(g(summ, "windows", sp, default=g(s, "windows", sp))),
                     *[num(g(counts, sp, n)) for n in labels]])
    out.append(H("Class counts per split"))
    out.append(Table(["split", "samples", "recordings", "groups", "windows", *labels], rows,
                     "windows per class; the audit's counts (audit.json summary)"))
    if counts:
        out.append(figure(plots.class_counts, counts, labels, alt="windows per class and split"))

    # Which group went where.
    out.append(H("Groups and recordings per split"))
    out.extend(_group_picture(run, groups))

    # Recording lengths.
    out.append(H("Recording lengths"))
    lengths = gd(summ, "recording_lengths")
    if lengths:
        rows = []
        for part in ("all", *SPLITS):
            st = gd(lengths, part)
            sec = gd(st, "seconds")
            rows.append([part, num(g(st, "min")), num(gn(st, "median"), 1), num(g(st, "max")),
                         f"{num(gn(sec, 'min'), 2)} .. {num(gn(sec, 'max'), 2)}" if sec else "n/a"])
        out.append(Table(["split", "min steps", "median", "max steps", "seconds"], rows))
    elif a is None:
        out.append(not_run("make train", "audit.json holds the length statistics"))
    if run.data is not None and not run.data.dataset.windowed:
        ds_ = run.data.dataset
        unit = "s" if ds_.rate_hz else "steps"
        scale = ds_.rate_hz or 1.0
        by_split = {sp: ds_.lengths[run.data.plan.indices[sp]] / scale for sp in SPLITS}
        out.append(figure(plots.recording_lengths, by_split, unit, alt="histogram of recording lengths by split"))
    elif run.data is not None:
        out.append(para(f"Every sample is one window ({'x'.join(map(str, gl(win, 'input_shape')))}): no recordings to cut."))

    # Example windows.
    out.append(H("Example windows per class"))
    if run.data is not None:
        out.extend(_examples(run))
    else:
        out.append(para(Mark("not drawn: ", "muted"), run.data_why))

    # Outliers, duplicates, label issues: what the audit found, to look at.
    out.append(H("Worst outliers"))
    worst = [w for w in gl(summ, "worst_outliers") if isinstance(w, dict)]
    if worst:
        out.append(Table(["window", "split", "robust z"],
                         [[text(w.get("window")), text(w.get("split")), num(gn(w, "z"), 1)] for w in worst],
                         f"largest robust z-score of any value (the audit flags z > "
                         f"{num(gn(run.check.get('outliers'), 'detail', 'threshold_z'), 0)})"))
        if run.data is not None:
            out.extend(_outlier_windows(run, worst))
    else:
        out.append(para("none found" if a is not None else "n/a (audit.json not found)"))

    out.append(H("Duplicates"))
    dup = gd(summ, "duplicates")
    within = [d for d in gl(dup, "within_split") if isinstance(d, dict)]
    if within:
        out.append(Table(["split", "recordings (identical windows)", "windows"],
                         [[text(d.get("split")), " = ".join(dict.fromkeys(map(str, gl(d, "recordings")))),
                           num(g(d, "windows"))] for d in within], "copies inside one split"))
    cross = gl(dup, "cross_split")
    out.append(para(f"Across splits: {ids(cross)}." if cross or dup else
                    ("No duplicates found." if a is not None else "n/a (audit.json not found)")))
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
    from pipeline.report import plots

    s = run.splits
    unit = text(g(s, "unit"))
    if run.data is not None:
        ds, plan = run.data.dataset, run.data.plan
        if plan.unit == "sample":
            return [para("No recordings or subjects/devices in this data: samples were split at random, "
                         "so there is no grouping to keep whole.")]
        key = ds.group_ids if plan.unit == "group" else ds.recording_ids
        split_of, recs = {}, {}
        for sp in SPLITS:
            for i in plan.indices[sp]:
                split_of.setdefault(key[i], sp)
                recs.setdefault(key[i], set()).add(ds.recording_ids[i])
        units = sorted(split_of, key=lambda u: (SPLITS.index(split_of[u]), u))
        counts = [len(recs[u]) for u in units] if plan.unit == "group" else None
        out = [figure(plots.group_splits, units, [split_of[u] for u in units], counts, plan.unit,
                      alt=f"each {plan.unit} coloured by the split it went to")]
        by_split = {sp: [u for u in units if split_of[u] == sp] for sp in SPLITS}
    elif groups:
        units = [(str(u), sp) for sp in SPLITS for u in gl(groups, sp)]
        out = [figure(plots.group_splits, [u for u, _ in units], [sp for _, sp in units], None, unit,
                      alt="each group coloured by the split it went to")]
        by_split = {sp: [str(u) for u in gl(groups, sp)] for sp in SPLITS}
    else:
        sizes = ", ".join(f"{sp}: {len(gl(s, 'splits', sp))} samples" for sp in SPLITS)
        return [para(f"Split unit: {unit}; {sizes}.")]
    rows = [[sp, num(len(by_split[sp])), ids(by_split[sp], 20)] for sp in SPLITS]
    out.append(Table(["split", f"{unit}s", "which"], rows))
    return out


def _representative(X: np.ndarray) -> int:
    """The window whose spread is closest to its class's median spread: typical, not an outlier."""
    spread = X.reshape(len(X), -1).std(axis=1)
    return int(np.argmin(np.abs(spread - np.median(spread))))


def _examples(run: Run) -> list:
    from pipeline.report import plots

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
    from pipeline.report import plots

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
    from pipeline.audit.fixes import FIXES

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


# --------------------------------------------------------------------------- 3. baselines vs the convnet


def _models(run: Run) -> list[tuple[str, dict]]:
    rows = [(str(name), b) for name, b in gd(run.train, "baselines").items() if isinstance(b, dict)]
    if gd(run.train, "metrics"):
        rows.append(("convnet", gd(run.train, "metrics")))
    return rows


def section_baselines(run: Run) -> list:
    from pipeline.report import plots

    if run.train is None:
        return [not_run("make train")]
    t = run.train
    out: list = []
    if g(t, "status") == "failed":
        out.append(para(Mark("The train stage failed: ", "bad"), text(g(t, "failure"))))
    clusters = gd(t, "split", "clusters")
    unit = text(g(t, "split", "unit"))
    few = [sp for sp in SPLITS if isinstance(g(clusters, sp), int) and g(clusters, sp) < 5]
    caption = (f"95% intervals resample whole {unit}s (train {num(g(clusters, 'train'))}, val "
               f"{num(g(clusters, 'val'))}, test {num(g(clusters, 'test'))} {unit}s)")
    models = _models(run)
    if not models:
        out.append(para("No scores recorded: the stage stopped before scoring any model."))
    for metric in ("balanced_accuracy", "macro_f1", "mcc", "accuracy") if models else ():
        rows = [[name, *[with_ci(gd(m, sp), metric) for sp in SPLITS]] for name, m in models]
        if metric in ("balanced_accuracy", "macro_f1"):
            out.append(H(metric.replace("_", " ").replace("f1", "F1")))
            out.append(Table(["model", "train", "validation", "test"], rows, caption))
        else:
            out.append(Table(["model", "train", "validation", "test"], rows, caption,
                             fold=f"{'MCC' if metric == 'mcc' else 'plain accuracy'}, the same way"))
        if metric == "balanced_accuracy":
            points = []
            for name, m in models:
                by = {}
                for sp in SPLITS:
                    v, ci = gn(m, sp, metric), gl(m, sp, "ci95", metric)
                    if v is not None:
                        by[sp] = (v, *(ci if len(ci) == 2 else (v, v)))
                points.append((name, by))
            if any(by for _, by in points):
                out.append(figure(plots.metric_by_split, points, metric, alt="balanced accuracy per model and split"))
            if few:
                out.append(para(Mark("Few groups: ", "warn"),
                                f"{', '.join(f'{sp} has {clusters[sp]}' for sp in few)} {unit}(s); an interval "
                                f"over so few {unit}s is too narrow to trust (over one it is a point), so none "
                                "is printed: the score of each instead."))
    by_group = gd(t, "by_group")
    if by_group:
        names = sorted({str(k) for sp in SPLITS for k in gd(by_group, sp)})
        rows = [[name, *[(f"{num(gn(by_group, sp, name, 'balanced_accuracy'))} ({num(g(by_group, sp, name, 'n'))})"
                          if g(by_group, sp, name) else "-") for sp in SPLITS]] for name in names[:40]]
        out.append(H("Convnet per subject/device"))
        out.append(Table(["subject/device", "train", "validation", "test"], rows,
                         "balanced accuracy over the classes each holds (windows)"))
    logo = gd(t, "leave_one_group_out")
    if gl(logo, "scores"):
        out.append(H("New-subject estimate: leave one group out (training side)"))
        out.append(Table(["held out", "windows", "balanced accuracy"],
                         [[", ".join(map(str, gl(r, "held_out"))), num(g(r, "windows")), num(gn(r, "balanced_accuracy"))]
                          for r in gl(logo, "scores")],
                         f"{text(g(logo, 'how'))}; the chosen configuration, {num(g(logo, 'epochs'))} epochs each"))
        out.append(para(f"mean {num(gn(logo, 'mean'))}, sd {num(gn(logo, 'sd'))}, range "
                        f"{num(gn(logo, 'min'))}..{num(gn(logo, 'max'))}"))
    elif g(logo, "skipped"):
        out.append(para(Mark("No new-subject estimate: ", "muted"), text(g(logo, "skipped"))))
    deltas = gd(t, "sanity", "baseline_deltas")
    if deltas:
        beats = gd(t, "sanity", "beats_baselines")
        rows = [[name, f"{num(gn(d, 'delta'))} [{num(gn(d, 'ci95', 0))}, {num(gn(d, 'ci95', 1))}]",
                 verdict(beats.get(name), "yes", "NO")] for name, d in deltas.items() if isinstance(d, dict)]
        out.append(H("Does the convnet beat each baseline? (validation)"))
        out.append(Table(["baseline", "gain in balanced accuracy [95% CI]", "beats it"], rows,
                         "paired cluster bootstrap; beating means the interval is above 0"))
    cv = gd(t, "baselines", "linear", "cv")
    if cv:
        out.append(para(f"Linear baseline, {num(g(cv, 'folds'))}-fold {text(g(cv, 'splitter'))} on the training split: "
                        f"balanced accuracy train {num(gn(cv, 'train_mean'))}, held-out folds {num(gn(cv, 'val_mean'))}."))
    out.append(H("What a naive random split would have claimed"))
    so = run.check.get("split_optimism")
    if so:
        d = gd(so, "detail")
        if "random_window_split" in d:
            out.append(Table(["split", f"{text(g(d, 'metric'))} (fast baseline, {num(g(d, 'folds'))}-fold CV on train+val)"],
                             [["random window split (naive)", num(gn(d, "random_window_split"))],
                              [f"this pipeline's split by {text(g(d, 'pipeline_unit'))}", num(gn(d, "pipeline_split"))],
                              [Mark("optimism of the naive split", "warn" if not so.get("passed") else "good"),
                               f"{gn(d, 'gap'):+.3f}" if gn(d, "gap") is not None else "n/a"]]))
        out.append(para(verdict(so.get("passed"), "ok", "warning", "warning"), " ", text(so.get("message"))))
    else:
        out.append(para("not measured (no split_optimism check in audit.json)"))
    per = gd(t, "metrics", "test", "per_class")
    if per:
        out.append(H("The convnet per class"))
        rows = [[name, num(g(c, "support")), num(gn(c, "precision")), num(gn(c, "recall")), num(gn(c, "f1")),
                 num(gn(t, "metrics", "val", "per_class", name, "recall")),
                 num(gn(t, "metrics", "train", "per_class", name, "recall"))] for name, c in per.items()]
        out.append(Table(["class", "test support", "test precision", "test recall", "test F1", "val recall",
                          "train recall"], rows))
    return out


# --------------------------------------------------------------------------- 4. training


def section_training(run: Run) -> list:
    from pipeline.report import plots

    if run.train is None:
        return [not_run("make train")]
    t = run.train
    s = gd(t, "sanity")
    out: list = []
    if g(t, "status") == "failed":
        out.append(para(Mark("The train stage failed: ", "bad"), text(g(t, "failure"))))
    repro = g(s, "reproducible")
    rows = [
        ["loss at init", num(gn(s, "init_loss")),
         f"{num(gn(s, 'expected_init_loss'))} ± {num(gn(s, 'init_loss_tolerance'), 2)} (entropy of the class prior)",
         verdict(g(s, "init_loss_ok"))],
        [f"overfit one batch of {num(g(s, 'overfit_batch_size'))} ({num(g(s, 'overfit_steps'))} steps)",
         num(gn(s, "overfit_batch_loss"), 4) if gn(s, "overfit_batch_loss", ) is None or gn(s, "overfit_batch_loss") >= 1e-3
         else f"{gn(s, 'overfit_batch_loss'):.1e}", f"< {num(gn(s, 'overfit_max_loss'), 3)}", verdict(g(s, "overfit_ok"))],
        ["reproducible (best trial twice, one seed)", {True: "same metrics", False: "DIFFERENT"}.get(repro, "not checked"),
         "identical", verdict(repro)],
        ["seeded", ", ".join(map(str, gl(s, "seeded"))) or "n/a", f"seed {text(g(s, 'seed'))}", Mark("", "muted")],
    ]
    out.append(H("Sanity checks (Karpathy's recipe)"))
    out.append(Table(["check", "measured", "expected", "verdict"], rows))
    hist = gd(t, "history")
    series = {k: [float(v) for v in gl(hist, k) if isinstance(v, (int, float))]
              for k in ("loss", "val_loss", "accuracy", "val_accuracy")}
    out.append(H("Loss and accuracy of the final fit"))
    if series["loss"]:
        best = g(hist, "best_epoch")
        out.append(figure(plots.training_curves, series, best if isinstance(best, int) else None,
                          gn(s, "init_loss"), gn(s, "expected_init_loss"), alt="training curves, train and validation"))
        out.append(para(f"{num(g(hist, 'epochs_run'))} epochs run, weights of epoch {num(best)} kept (lowest "
                        "validation loss, early stopping)."))
        n = len(series["loss"])
        step = max(1, n // 25)
        keep = sorted(set(range(0, n, step)) | {n - 1} | ({best - 1} if isinstance(best, int) and 0 < best <= n else set()))
        rows = [[str(e + 1), *[num(v[e] if e < len(v) else None, 4) for v in series.values()]] for e in keep]
        out.append(Table(["epoch", "loss", "val loss", "accuracy", "val accuracy"], rows,
                         fold="per epoch" + (f" (every {step}th)" if step > 1 else "")))
    else:
        out.append(para("no training history recorded"))
    hp = gd(t, "model", "hyperparameters") or gd(t, "search", "best", "params")
    if gd(t, "model"):
        out.append(para(f"Final model: {num(g(t, 'model', 'params'))} parameters, input "
                        f"{'x'.join(map(str, gl(t, 'model', 'input_shape'))) or 'n/a'}; "
                        + ", ".join(f"{k} {v}" for k, v in hp.items())))
    else:
        out.append(para(Mark("No model was saved", "muted"), " (float.keras is written only when every check passes)."))
    search = gd(t, "search")
    trials = [x for x in gl(search, "trials") if isinstance(x, dict)]
    out.append(H("Random search"))
    if trials:
        best_trial = g(search, "best", "trial")
        out.append(para(f"{len(trials)} trials of up to {num(g(search, 'epochs'))} epochs, each trained on the "
                        f"training split and scored by {text(g(search, 'space', 'score'))}; trial 0 is the "
                        "configured model. A trial far below the diagonal overfits."))
        pts = [(gn(x, "train_score"), gn(x, "val_score"), x.get("trial") == best_trial) for x in trials]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if pts:
            out.append(figure(plots.search_trials, pts, "balanced accuracy", alt="search trials: validation vs training score"))
        keys = ("learning_rate", "width", "depth", "kernel_size", "dropout", "l2")
        rows = [[Mark(f"{x.get('trial')} (best)", "good") if x.get("trial") == best_trial else text(x.get("trial")),
                 text(x.get("source")), *[text(g(x, "params", k)) for k in keys], num(g(x, "model_params")),
                 num(gn(x, "train_score")), num(gn(x, "val_score")), num(g(x, "epochs"))] for x in trials]
        out.append(Table(["trial", "source", "lr", "width", "depth", "kernel", "dropout", "l2", "params",
                          "train score", "val score", "epochs"], rows, fold="every trial" if len(trials) > 12 else ""))
        out.extend(_search_device(t, search, trials, best_trial))
    else:
        out.append(para("no search trials recorded"))
    timing = gd(t, "timing")
    if timing:
        out.append(para("Time per phase: " + ", ".join(f"{k} {num(gn(timing, k), 1)} s" for k in timing)))
    return out


def _search_device(t: dict, search: dict, trials: list[dict], best_trial) -> list:
    """Where the search ran, each trial's device cost, the Pareto fronts and the seed spread."""
    from pipeline.report import plots

    out: list = []
    if not gd(search, "pareto"):
        return out
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in gd(search, "counts").items() if n)
    out.append(para(f"Ran on {text(g(search, 'engine'))} ({text(g(search, 'address'))}, {num(g(search, 'cpus'))} CPUs): "
                    f"{counts}; {num(gn(search, 'trials_per_min'), 2)} trials per minute. Chosen: trial "
                    f"{text(best_trial)}, {text(g(search, 'chosen_by'))}. Each trial's model converted to int8 "
                    "(calibrated on training windows); RAM is the TFLM arena as exported (64-bit host figure), "
                    "latency is estimated (MACs x cycles/MAC / clock, TFLM reference kernels). A trial over "
                    "the board's budget stops before training."))
    on_ram = {g(p, "trial") for p in gl(search, "pareto", "ram")}
    on_lat = {g(p, "trial") for p in gl(search, "pareto", "latency")}
    pts = [(gn(x, "val_score"), gn(x, "device", "ram_bytes") / 1024, gn(x, "device", "latency_ms"),
            x.get("trial") in on_ram, x.get("trial") in on_lat, x.get("trial") == best_trial)
           for x in trials if x.get("status") == "ok" and isnum(gn(x, "device", "ram_bytes"))]
    if pts:
        out.append(figure(plots.search_pareto, pts, "balanced accuracy",
                          alt="search: validation score against RAM and against estimated latency"))
    rows = [[text(x.get("trial")), text(x.get("status")), num(gn(x, "val_score")), nbytes(g(x, "device", "ram_bytes")),
             nbytes(g(x, "device", "flash_bytes")), num(g(x, "device", "macs")), num(gn(x, "device", "latency_ms"), 2),
             str(x.get("error") or "; ".join(map(str, gl(x, "over_budget"))))] for x in trials]
    out.append(Table(["trial", "status", "val score", "RAM (arena)", "flash", "MACs", "latency ms (est.)", "note"],
                     rows, fold="device cost per trial"))
    s = gd(t, "refit_seeds")
    if s:
        out.append(para(f"The chosen configuration refit with seeds {', '.join(map(str, gl(s, 'seeds')))}: validation "
                        f"{num(gn(s, 'mean'))} ± {num(gn(s, 'std'))} (min {num(gn(s, 'min'))}, max "
                        f"{num(gn(s, 'max'))}), beside the search's figure {num(gn(s, 'search_val_score'))} "
                        "(one seed, picked as the best of several trials: expect it to flatter)."))
    return out


# --------------------------------------------------------------------------- 5. quantization


def section_quantization(run: Run) -> list:
    from pipeline.report import plots

    if run.quantize is None:
        return [not_run("make quantize")]
    q = run.quantize
    labels = [str(x) for x in gl(q, "labels")] or run.labels
    val = gd(q, "validation")
    out: list = []
    override = gd(q, "override")
    if override:
        out.append(para(Mark("OVERRIDE (--accept-drop): ", "bad"), text(g(override, "note")), ": ",
                        "; ".join(map(str, gl(override, "failures")))))
    if g(q, "gates_passed") is True or override:
        out.append(para(Mark("Every gate passed: ", "good") if not override else Mark("Exported anyway: ", "warn"),
                        "the int8 model was scored on the test split once and exported."))
    else:
        out.append(para(Mark("The int8 model failed its gates: ", "bad"),
                        "; ".join(map(str, gl(q, "failures"))) or "see quantize_report.json",
                        f" (kept as {g(q, 'rejected_model')} for inspection; nothing was exported)"
                        if g(q, "rejected_model") else ""))
    if val:
        out.append(H(f"Float vs int8 vs TFLM on the validation split ({num(g(val, 'windows'))} windows, "
                     f"{num(g(val, 'clusters'))} groups)"))
        rows = [[m.replace("_", " "), with_ci(gd(val, "float"), m), with_ci(gd(val, "int8"), m),
                 with_ci(gd(val, "tflm"), m)] for m in HEADLINE]
        out.append(Table(["metric", "float (Keras)", "int8 (LiteRT)", "int8 (TFLM)"], rows,
                         f"int8 (LiteRT): {text(g(val, 'int8_runtime'))}; TFLM: the Python runtime of TensorFlow Lite Micro"))
        deltas = {m: d for m, d in gd(val, "delta_int8_minus_float").items() if isinstance(d, dict)}
        mc = gd(val, "mcnemar_float_vs_int8")
        if deltas or mc:
            rows = [[m.replace("_", " "), f"{num(gn(d, 'delta'))} [{num(gn(d, 'ci95', 0))}, {num(gn(d, 'ci95', 1))}]"]
                    for m, d in deltas.items()]
            if mc:
                rows.append(["McNemar test, float vs int8", f"p = {num(gn(mc, 'p_value'), 3)} (float right and int8 "
                             f"wrong on {num(g(mc, 'a_right_b_wrong'))} windows, the reverse on {num(g(mc, 'a_wrong_b_right'))})"])
            out.append(Table(["int8 − float", "difference [95% CI, paired]"], rows))
        gates = gd(val, "gates")
        if gates:
            out.append(Table(["gate", "value", "rule", "threshold", "verdict"],
                             [[name, num(g(gt, "value"), 4), text(g(gt, "rule")), num(g(gt, "threshold"), 4),
                               verdict(g(gt, "passed"))] for name, gt in gates.items() if isinstance(gt, dict)],
                             "the gates, on validation"))
        ag = gd(val, "agreement")
        ref = gd(val, "litert_vs_tflm", "reference_kernels")
        dflt = gd(val, "litert_vs_tflm", "default_kernels")
        out.append(Table(["compared", "top-1 agreement", "bit-identical outputs", "max LSB difference"], [
            ["float vs int8", pct(gn(ag, "float_int8")), "", ""],
            ["float vs TFLM", pct(gn(ag, "float_tflm")), "", ""],
            ["LiteRT reference kernels vs TFLM (gated)", pct(gn(ref, "top1_agreement")),
             pct(gn(ref, "bit_identical_share")), num(g(ref, "max_lsb_difference"))],
            ["LiteRT default kernels vs TFLM (not gated)", pct(gn(dflt, "top1_agreement")),
             pct(gn(dflt, "bit_identical_share")), num(g(dflt, "max_lsb_difference"))],
        ], text(g(dflt, "why", default=""))))
    else:
        out.append(para("No validation comparison recorded (the stage stopped before it)."))
    out += _per_layer(q)

    # Test split: float (train stage) vs int8 (this stage).
    test = gd(q, "test")
    ftest = gd(run.train, "metrics", "test")
    if test:
        out.append(H(f"On the test split ({num(g(test, 'n'))} windows, {num(g(test, 'clusters'))} groups; one look each)"))
        out.append(Table(["metric", "float (train stage)", "int8 (quantize stage)"],
                         [[m.replace("_", " "), with_ci(ftest, m), with_ci(test, m)] for m in HEADLINE]))
    else:
        out.append(para(Mark("No test look for the int8 model", "muted"),
                        " (only a model that passes every gate is scored on test)."))
    mats = []
    if gl(val, "float", "confusion"):
        mats.append(("float, validation", gl(val, "float", "confusion")))
    if gl(val, "int8", "confusion"):
        mats.append(("int8, validation", gl(val, "int8", "confusion")))
    if mats:
        out.append(H("Confusion matrices"))
        out.append(figure(plots.confusions, mats, labels, alt="confusion matrices, float vs int8 on validation"))
        tmats = [(name, m) for name, m in (("float, test", gl(ftest, "confusion")), ("int8, test", gl(test, "confusion"))) if m]
        if test and tmats:
            out.append(figure(plots.confusions, tmats, labels, alt="confusion matrices, float vs int8 on test"))
        out.append(confusion_table(mats + (tmats if test else []), labels))
    per = gd(val, "per_class")
    if per:
        out.append(H("Per class: what int8 changed (validation)"))
        rows = []
        for name, c in per.items():
            d = gn(c, "recall_delta")
            rows.append([name, num(g(c, "support")), num(gn(c, "float_recall")), num(gn(c, "int8_recall")),
                         Mark(f"{d:+.3f}", "bad" if d < -0.01 else "good" if d >= 0 else "warn") if d is not None else "n/a",
                         f"{gn(c, 'f1_delta'):+.3f}" if gn(c, "f1_delta") is not None else "n/a",
                         pct(gn(c, "changed_share"))])
        out.append(Table(["class", "support", "float recall", "int8 recall", "recall Δ", "F1 Δ",
                          "windows that change class"], rows))
    err = gd(val, "output_error")
    clip = gd(val, "input_clipping")
    if err or clip:
        out.append(H("Output error and input range"))
        rows = [["RMSE", num(gn(err, "rmse"), 5)], ["mean absolute error", num(gn(err, "mae"), 5)],
                ["relative L2", num(gn(err, "relative_l2"), 5)], ["cosine similarity", num(gn(err, "cosine_similarity"), 5)]]
        if clip:
            rng = gl(clip, "range")
            rows += [["int8 input range (float units)", f"[{num(gn(clip, 'range', 0))}, {num(gn(clip, 'range', 1))}]" if rng else "n/a"],
                     ["input values outside it (clamped)", pct(gn(clip, "values_share"), 2)],
                     ["windows with a clamped value", pct(gn(clip, "windows_share"), 2)]]
        out.append(Table(["figure", "value"], rows, text(g(err, "compared", default=""))))
    cal = gd(q, "calibration")
    if cal:
        out.append(para(f"Calibration: {num(g(cal, 'windows'))} windows of the {text(g(cal, 'split'))} split "
                        f"({text(g(cal, 'sampling'))}; per class "
                        f"{', '.join(f'{k} {v}' for k, v in gd(cal, 'per_class').items())}); "
                        f"{num(g(cal, 'outlier_windows_left_out'))} outlier windows (z > {num(gn(cal, 'outlier_z'), 1)}) left out. "
                        f"Weights {text(g(q, 'conversion', 'weights'))}, activations {text(g(q, 'conversion', 'activations'))}."))
    out.extend(_memory(q))
    return out


def _per_layer(q: dict) -> list:
    """Where int8 loses accuracy, layer by layer, and what the remedies gave."""
    from pipeline.report import plots

    out: list = []
    rem = gd(q, "remedies")
    if gl(rem, "tried"):
        out.append(H("Input handling: the remedies tried, in order (the first that meets every gate is kept)"))
        out.append(Table(["remedy", "what", "float/int8 agreement", "balanced accuracy int8 − float", "gates"], [
            [text(g(r, "remedy")), text(g(r, "what")), "skipped" if g(r, "skipped") else pct(gn(r, "float_int8_agreement")),
             text(g(r, "skipped")) if g(r, "skipped") else
             f"{num(gn(r, 'balanced_accuracy_delta'))} [{num(gn(r, 'balanced_accuracy_delta_ci95', 0))}, "
             f"{num(gn(r, 'balanced_accuracy_delta_ci95', 1))}]",
             "" if g(r, "skipped") else verdict(g(r, "passed") if "passed" in r else g(r, "gates_passed"), "met", "missed")]
            for r in gl(rem, "tried") if isinstance(r, dict)],
            f"kept: {text(g(rem, 'kept'))}; {text(g(rem, 'qat'))}"))
    layers = gd(q, "per_layer")
    rows = [r for r in gl(layers, "layers") if isinstance(r, dict)]
    if not rows:
        return out
    jump = gd(layers, "jump")
    out.append(H(f"Layer by layer on {num(g(layers, 'windows'))} validation windows"))
    if jump and g(jump, "significant"):
        out.append(para(Mark(f"int8 loses the signal at {text(g(jump, 'layer'))}: ", "bad"),
                        f"cosine {num(gn(jump, 'cosine'), 4)} (was {num(gn(jump, 'cosine_before'), 4)} before it)"))
    out.append(figure(plots.per_layer, [text(g(r, "layer")) for r in rows],
                      [gn(r, "float_vs_int8", "cosine") for r in rows],
                      [g(r, "litert_vs_tflm", "max_lsb") for r in rows], text(g(jump, "layer")),
                      alt="float vs int8 cosine and LiteRT vs TFLM LSB per layer"))
    out.append(Table(["layer", "ops", "float layer", "cosine", "RMSE / spread", "max error (LSB)",
                      "LiteRT vs TFLM max LSB", "values differing"],
                     [[text(g(r, "layer")), "+".join(map(str, gl(r, "ops"))), text(g(r, "float_layer")),
                       num(gn(r, "float_vs_int8", "cosine"), 4), num(gn(r, "float_vs_int8", "relative_rmse"), 3),
                       num(gn(r, "float_vs_int8", "max_error_lsb"), 0), num(g(r, "litert_vs_tflm", "max_lsb")),
                       pct(gn(r, "litert_vs_tflm", "differing_share"))] for r in rows],
                     text(g(layers, "litert_vs_tflm_note"))))
    return out


def confusion_table(mats: list[tuple[str, list]], labels: list[str]) -> Table:
    """The confusion matrices of a figure as numbers (what report.md shows for it)."""
    rows = [[f"{labels[i]} ({name})", *[num(v) for v in row]] for name, m in mats
            for i, row in enumerate(m) if isinstance(row, list) and i < len(labels)]
    return Table(["true \\ predicted", *labels], rows, "rows: true class, columns: predicted",
                 fold="the confusion matrices as numbers")


def _memory(q: dict) -> list:
    from pipeline.report import plots

    mem, board = gd(q, "memory"), gd(q, "board")
    out: list = [H("Flash and RAM against the board budget")]
    fits = gd(board, "fits")
    prof = gd(board, "profile")
    bars = []
    for part, total_key in (("flash", "flash_bytes"), ("ram", "ram_bytes")):
        f = gd(fits, part)
        if gn(f, "used_bytes") is not None and gn(f, "budget_bytes"):
            bars.append((part if part == "flash" else "RAM", int(f["used_bytes"]), int(f["budget_bytes"]),
                         g(prof, total_key)))
    if bars:
        out.append(figure(plots.memory_bars, bars, text(g(prof, "name")), alt="flash and RAM used against the budget"))
    if mem or fits:
        rows = [[part, nbytes(g(fits, part, "used_bytes")), text(g(fits, part, "what")), nbytes(g(fits, part, "budget_bytes")),
                 text(g(board, "budgets", f"{part}_source")), verdict(g(fits, part, "passed"), "fits", "DOES NOT FIT")]
                for part in ("flash", "ram")]
        out.append(Table(["", "used", "what", "budget", "budget from", "verdict"], rows,
                         f"board {text(g(prof, 'title'))} ({text(g(prof, 'mcu'))}, {text(g(prof, 'core'))}, "
                         f"{nbytes(g(prof, 'flash_bytes'))} flash, {nbytes(g(prof, 'ram_bytes'))} RAM)"))
        out.append(para(f"Tensor arena: recorded {nbytes(g(mem, 'arena_recorded_bytes'))}, true minimum "
                        f"{nbytes(g(mem, 'arena_min_bytes'))} by bisection, exported {nbytes(g(mem, 'arena_bytes_exported'))} "
                        f"(+{pct(gn(mem, 'margin'), 0)} margin). {text(g(mem, 'note', default=''))}"))
    else:
        out.append(para("not measured (the stage stopped before it)"))
    macs = gn(q, "macs", "total")
    est = {k: v for k, v in gd(q, "latency_estimates").items() if isinstance(v, dict)}
    if macs is not None:
        out.append(H("Compute and estimated latency"))
        rows = [[Mark(f"{name} (configured)", "good") if e.get("configured") else name, "n/a" if gn(e, "clock_hz") is None else f"{e['clock_hz'] / 1e6:g} MHz",
                 num(gn(e, "reference_kernels_ms"), 2), num(gn(e, "optimized_kernels_ms"), 2)] for name, e in est.items()]
        source = g(next(iter(est.values()), {}), "source")
        out.append(para(f"{int(macs):,} multiply-accumulates per inference. Latency is ",
                        Mark("estimated, not measured", "warn"),
                        ": MACs × cycles per MAC / clock" + (f"; {source}." if source else ".")))
        if rows:
            out.append(Table(["board", "clock", "ms, reference kernels", "ms, optimized kernels"], rows, fold="estimated latency on each board"))
    ops = [o for o in gl(q, "ops") if isinstance(o, dict)]
    if ops:
        out.append(Table(["#", "op", "from layer", "MACs", "TFLM kernel", "output shape"],
                         [[text(o.get("index")), text(o.get("op")), text(o.get("layer")), num(g(o, "macs")),
                           text(o.get("tflm")), "x".join(map(str, gl(o, "output_shape")))] for o in ops],
                         f"{len(ops)} ops, every one run by TFLM: {verdict(g(q, 'tflm_ops', 'supported'), 'yes', 'NO').text}",
                         fold="the ops of the int8 model"))
    files = gd(q, "firmware", "files")
    if files:
        out.append(para(f"Firmware exported: {', '.join(files)} (array {text(g(q, 'firmware', 'array'))}, "
                        f"{num(g(q, 'firmware', 'alignment'))}-byte aligned)."))
    return out


# --------------------------------------------------------------------------- 6. on the device


def section_device(run: Run) -> list:
    from pipeline.report import plots

    d = run.device
    if d is None:
        if run.device_lines:
            total = g(run.splits, "windows", "test")
            torn = f" ({run.device_torn} torn line(s) dropped)" if run.device_torn else ""
            if isinstance(total, int) and len(run.device_lines) >= total:
                return [para(Mark("Not scored yet: ", "warn"), f"device_eval.jsonl holds all {total} test windows{torn}, "
                             "but device_report.json is missing; tinyml eval scores them.")]
            return [para(Mark("Evaluation incomplete: ", "warn"),
                         f"device_eval.jsonl holds {len(run.device_lines)} of {num(total)} test windows{torn}; "
                         "make flash (or tinyml eval) resumes where it stopped.")]
        return [not_run("make flash")]
    labels = run.labels
    out: list = []
    info = {k: v for k, v in gd(d, "device").items() if isinstance(v, (str, int, float, bool))}
    if info:
        out.append(Table(["device", ""], [[k, text(v)] for k, v in info.items()], fold="the device" if len(info) > 8 else ""))
    qtest = gd(run.quantize, "test")
    m = gd(d, "metrics")
    out.append(H(f"On-device metrics ({num(g(d, 'windows'))} test windows)"))
    out.append(Table(["metric", "device", "host int8 (quantize stage)"],
                     [[k.replace("_", " "), with_ci(m, k), with_ci(qtest, k)] for k in HEADLINE]))
    ag = gd(d, "agreement_with_host_int8")
    req = gn(ag, "required")
    top1 = gn(ag, "top1")
    ok = g(ag, "passed") if top1 is not None else None
    out.append(para("Agreement with the host int8 model: ",
                    verdict(ok, pct(top1, 2) if top1 is not None else "n/a", pct(top1, 2)),
                    f" top-1 ({num(g(ag, 'differing'))} windows differ; largest probability difference "
                    f"{num(gn(ag, 'max_abs_probability_difference'), 4)}"
                    f"{f'; required {pct(req, 0)}' if req is not None else ''})."))
    mats = [(name, mat) for name, mat in (("host int8, test", gl(qtest, "confusion")), ("device, test", gl(m, "confusion"))) if mat]
    if mats:
        out.append(figure(plots.confusions, mats, labels, alt="confusion matrices, host int8 vs device on test"))
        out.append(confusion_table(mats, labels))
    differ = [x for x in gl(ag, "samples_that_differ") if isinstance(x, dict)]
    if not differ and g(ag, "differing") == 0:
        out.append(para("No window differs: the device gave the host's top-1 class on every test window."))
    if differ:
        out.append(H("Windows where the device and the host disagree"))
        out.append(Table(["window", "label", "device", "host int8", "device probabilities", "host probabilities"],
                         [[text(x.get("window_id")), text(x.get("label")), text(x.get("device")), text(x.get("host_int8")),
                           " ".join(num(p, 3) for p in gl(x, "device_probabilities")),
                           " ".join(num(p, 3) for p in gl(x, "host_probabilities"))] for x in differ[:50]],
                         fold="the windows" if len(differ) > 10 else ""))
    timing = {k: v for k, v in gd(d, "timing_reported_by_device").items()}
    out.append(H("Timing"))
    rows = [[k, *(num(gn(v, s), 2) for s in ("mean", "p50", "p95", "max")), num(g(v, "n"))]
            for k, v in timing.items() if isinstance(v, dict)]
    if rows:
        out.append(Table(["reported by the device", "mean ms", "p50", "p95", "max", "n"], rows, text(g(d, "timing_note", default=""))))
    else:
        out.append(para("The device reported no timing."))
    thr = {k: v for k, v in gd(d, "throughput").items() if isinstance(v, (int, float, str))}
    if thr:
        out.append(para("Throughput over serial: " + ", ".join(f"{k.replace('_', ' ')} {text(v)}" for k, v in thr.items()) + "."))
    out.append(para(f"device_eval.jsonl: {len(run.device_lines)} result lines"
                    + (f", {run.device_torn} torn line(s) dropped." if run.device_torn else ".")))
    out += _measured_on_emulated_m4(gd(d, "measured_on_emulated_cortex_m4"))
    return out


def _measured_on_emulated_m4(m: dict) -> list:
    """The firmware's own figures (tinyml flash --device qemu), beside the MAC-based estimate."""
    if not m:
        return []
    est = gd(m, "mac_estimate")
    rows = [
        ["flash (text + data of the ELF)", nbytes(g(m, "flash_bytes_text_plus_data")), Mark("measured", "good")],
        ["static RAM (data + bss of the ELF)", nbytes(g(m, "static_ram_bytes_data_plus_bss")), Mark("measured", "good")],
        ["stack high-water mark", f"{nbytes(g(m, 'stack_high_water_bytes'))} of {nbytes(g(m, 'stack_size_bytes'))}",
         Mark("measured", "good")],
        ["instructions per inference", num(g(m, "instructions_per_inference")), Mark("measured", "good")],
    ]
    if est:
        rows += [
            ["cycles per inference, reference kernels", num(g(est, "estimated_cycles_reference_kernels")),
             Mark("estimated", "warn")],
            ["cycles per inference, optimized kernels", num(g(est, "estimated_cycles_optimized_kernels")),
             Mark("estimated", "warn")],
        ]
    return [H("Measured on an emulated Cortex-M4"),
            Table(["", "value", ""], rows, f"the firmware itself on {text(g(m, 'machine'))}"),
            para(text(g(m, "instructions_note", default="")) + ". "
                 + (f"Estimates: {num(g(est, 'macs'))} MACs × cycles per MAC ({text(g(est, 'source'))})." if est else ""))]


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
    s, t, q = run.splits, run.train, run.quantize
    override = [para(Mark("OVERRIDE: ", "bad"), "the deployed int8 model missed its accuracy gate(s) "
                     f"({', '.join(map(str, gl(q, 'override', 'failed_gates')))}) and was exported with --accept-drop")] \
        if gd(q, "override") else []
    unit = text(g(s, "unit"))
    summ = gd(run.audit, "summary")
    test_groups = len(gl(summ, "groups", "test")) if gd(summ, "groups") else None
    looks, repeated = run.test_looks
    score = g(t, "search", "space", "score")

    no_test = [
        (Mark("yes", "good"), f": {num(g(s, 'windows', 'test'))} test windows from {len(gl(s, 'splits', 'test'))} samples"
         f"{f' and {test_groups} {unit}s' if test_groups is not None else ''}, held out before training "
         f"(splits.json, strategy {text(g(s, 'strategy'))})"),
        f"its content SHA-256 ({text(g(s, 'test_sha256'))[:12]}…) is checked by every later stage",
        (f"model choices scored on validation ({score})" if score else (NOT_RECORDED, ": how models were chosen")),
        (Mark(f"{len(looks)} look(s)", "warn" if repeated else "good"), " at the test set in test_ledger.jsonl"
         + (f"; repeated for: {', '.join(f'{p} ({n})' for p, n in repeated.items())}" if repeated else ", one per purpose")),
    ]
    calib = gd(q, "calibration")
    pre = [_normalization(run) if t is not None else (NOT_RECORDED, ": make train has not run"),
           f"windows are cut after the split, from each split's own recordings (unit: {unit})"]
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
    illegit = [_check_line(run, "identifier_label"), _check_line(run, "group_label_confounding"),
               _check_line(run, "constant_channels"),
               (NOT_RECORDED, ": whether any input is a proxy for the label beyond these checks")]
    if g(s, "strategy") == "time":
        temporal = [_check_line(run, "temporal_order"), _check_line(run, "window_overlap"),
                    f"gap between splits: {text(g(s, 'sizes', 'gap_s'))} s"]
    else:
        temporal = [(Mark("n/a", "muted"), f": temporal_order ({text(g(s, 'strategy'))} split, not chronological)"),
                    _check_line(run, "window_overlap"),
                    (NOT_RECORDED, ": whether deployment sees data from before the training period")]
    clusters = gd(t, "split", "clusters")
    nonind = [f"split by {unit}: all windows of a {unit} stay in one split",
              _check_line(run, "group_overlap"), _check_line(run, "permutation_test"),
              (f"intervals resample whole {unit}s (test: {num(g(clusters, 'test'))})" if clusters
               else (NOT_RECORDED, ": how intervals were computed")),
              _check_line(run, "split_optimism")]
    bias = [f"predefined test split: {'yes (from the source)' if g(s, 'predefined_test') else 'no'}",
            _class_shift(gd(summ, "class_counts")), _check_line(run, "missing_classes"),
            (f"test holds {test_groups} {unit}(s)" if test_groups is not None else (NOT_RECORDED, f": test {unit}s")),
            f"samples excluded from every split: {sum(len(v) for v in gd(s, 'excluded').values() if isinstance(v, list))}",
            (NOT_RECORDED, ": whether the data represent the deployment population")]

    def kind(code: str, name: str, question: str) -> tuple:
        return (Mark(f"{code} {name}", "strong"), f" — {question}")

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
    out.append(H(f"Looks at the test set: {len(looks)}"))
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


# --------------------------------------------------------------------------- at a glance


def glance(run: Run) -> Table:
    a, t, q, d = run.audit, run.train, run.quantize, run.device
    err, warn = gl(a, "errors_failed"), gl(a, "warnings_failed")
    rows = [["data and audit",
             verdict(not err, "passed", "FAILED") if a is not None else Mark("not run", "muted"),
             f"{len(gl(a, 'checks'))} checks, {len(err)} error(s), {len(warn)} warning(s)" if a is not None else "make train"]]
    if t is None:
        rows.append(["train", Mark("not run", "muted"), "make train"])
    else:
        rows.append(["train", verdict(g(t, "status") == "passed", "passed", text(g(t, "status")).upper()),
                     f"float test balanced accuracy {with_ci(gd(t, 'metrics', 'test'), 'balanced_accuracy')}"
                     if gd(t, "metrics", "test") else text(g(t, "failure", default="no test metrics"))])
    if q is None:
        rows.append(["quantize", Mark("not run", "muted"), "make quantize"])
    else:
        rows.append(["quantize", Mark("OVERRIDE --accept-drop", "bad") if gd(q, "override")
                     else verdict(g(q, "gates_passed") is True, "passed", "FAILED"),
                     f"int8 test balanced accuracy {with_ci(gd(q, 'test'), 'balanced_accuracy')}" if gd(q, "test")
                     else "gates failed: no test look" if g(q, "gates_passed") is not True else "n/a"])
    if d is None:
        rows.append(["flash", Mark("not run", "muted"), "make flash"])
    else:
        rows.append(["flash", Mark("done", "good"),
                     f"device test balanced accuracy {with_ci(gd(d, 'metrics'), 'balanced_accuracy')}; agreement with "
                     f"host int8 {pct(gn(d, 'agreement_with_host_int8', 'top1'), 2)}"])
    looks, repeated = run.test_looks
    rows.append(["test set", Mark(f"{len(looks)} look(s)", "warn" if repeated else "good"),
                 f"repeated for: {', '.join(sorted(repeated))}" if repeated else "one per purpose (test_ledger.jsonl)"])
    return Table(["stage", "status", "headline"], rows)


# --------------------------------------------------------------------------- rendering


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d1d1f;
max-width:980px;margin:0 auto;padding:8px 20px 60px;background:#fff}
h1{font-size:1.7em;margin:.6em 0 .2em}h2{font-size:1.35em;border-bottom:2px solid #e3e3e3;padding-bottom:4px;margin-top:2.2em}
h3{font-size:1.05em;margin:1.5em 0 .4em}p{margin:.5em 0}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #e3e3e3;padding:6px 0;font-size:14px;z-index:1}
nav a{margin-right:1em;color:#0b57a4;text-decoration:none;white-space:nowrap}
.tbl{overflow-x:auto;margin:.4em 0 1.1em;max-width:100%}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f5f6f7;font-weight:600;white-space:nowrap}
td{max-width:34em;overflow-wrap:break-word}td:first-child{max-width:18em}td ul{margin:0;padding-left:1.1em}td li{margin:.1em 0}caption{caption-side:bottom;text-align:left;color:#666;font-size:12px;padding-top:4px}
img{display:block;max-width:100%;height:auto;margin:.6em 0}
details{margin:.3em 0 1em}summary{cursor:pointer;color:#0b57a4;font-size:14px}
.bad{color:#b3261e;font-weight:600}.warn{color:#9a5b00;font-weight:600}.good{color:#1a7f37}.muted{color:#6b6b6b}
.meta{color:#6b6b6b;font-size:13px}.strong{font-weight:600}
"""


def _cell_html(c) -> str:
    if isinstance(c, Mark):
        return f'<span class="{c.kind}">{html.escape(c.text)}</span>'
    if isinstance(c, tuple):
        return "".join(_cell_html(x) for x in c)
    if isinstance(c, list):
        return "<ul>" + "".join(f"<li>{_cell_html(x)}</li>" for x in c) + "</ul>"
    return html.escape(str(c))


def _block_html(b) -> str:
    if isinstance(b, H):
        return f"<h3>{html.escape(b.text)}</h3>"
    if isinstance(b, P):
        return "<p>" + "".join(_cell_html(x) for x in b.parts) + "</p>"
    if isinstance(b, Img):
        data = base64.b64encode(b.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">'
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in b.head)
        body = "".join("<tr>" + "".join(f"<td>{_cell_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        caption = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
        table = f'<div class="tbl"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        if b.fold:
            return f"<details><summary>{html.escape(b.fold)} ({len(b.rows)} rows)</summary>{table}</details>"
        return table
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(title: str, meta: str, top: Table, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{s.number}. {html.escape(s.title)}</a>' for s in sections)
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="meta">{html.escape(meta)}</p>', f"<nav>{nav}</nav>",
            "<h2 id=\"glance\">At a glance</h2>", _block_html(top)]
    for s in sections:
        body.append(f'<h2 id="{s.anchor}">{s.number}. {html.escape(s.title)}</h2>')
        body.extend(_block_html(b) for b in s.blocks)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _inline_md(c) -> str:
    if isinstance(c, tuple):
        return "".join(_inline_md(x) for x in c)
    return _mark_md(c) if isinstance(c, Mark) else str(c)


def _cell_md(c) -> str:
    s = "; ".join(_inline_md(x) for x in c) if isinstance(c, list) else _inline_md(c)
    return " ".join(s.split()).replace("|", "\\|")


def _mark_md(m: Mark) -> str:
    core = m.text.strip()
    if m.kind not in ("bad", "warn") or not core:
        return m.text
    return m.text[: len(m.text) - len(m.text.lstrip())] + f"**{core}**" + m.text[len(m.text.rstrip()):]


def _block_md(b) -> str:
    if isinstance(b, H):
        return f"### {b.text}"
    if isinstance(b, P):
        return "".join(_mark_md(x) if isinstance(x, Mark) else str(x) for x in b.parts)
    if isinstance(b, Img):
        return f"_Figure in report.html: {b.alt}._"
    if isinstance(b, Table):
        lines = ["| " + " | ".join(_cell_md(h) for h in b.head) + " |", "|" + "---|" * len(b.head)]
        lines += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in b.rows]
        if b.caption:
            lines.append(f"\n_{_cell_md(b.caption)}_")
        return "\n".join(lines)
    raise TypeError(f"unknown block {type(b).__name__}")


def render_md(title: str, meta: str, top: Table, sections: list[Section]) -> str:
    parts = [f"# {title}", meta, "## At a glance", _block_md(top)]
    for s in sections:
        parts.append(f"## {s.number}. {s.title}")
        parts.extend(_block_md(b) for b in s.blocks)
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- the stage


BUILDERS = (
    ("data", "The data", section_data, ("splits.json", "audit.json", "config.toml")),
    ("audit", "The audit", section_audit, ("audit.json",)),
    ("baselines", "Baselines vs the convnet", section_baselines, ("train_report.json", "audit.json")),
    ("training", "Training", section_training, ("train_report.json",)),
    ("quantization", "Quantization", section_quantization, ("quantize_report.json", "train_report.json")),
    ("device", "On the device", section_device, ("device_report.json", "quantize_report.json")),
    ("leakage", "Model info sheet: leakage", section_info_sheet,
     ("splits.json", "audit.json", "train_report.json", "quantize_report.json", "test_ledger.jsonl")),
)


def build_report(run_dir: str | Path, out=print) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` from whatever artifacts the run has; return their paths."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    sections = []
    for number, (anchor, title, build, sources) in enumerate(BUILDERS, 1):
        try:
            blocks = build(run)
        except PipelineError:
            raise
        except Exception as exc:
            # The readers above tolerate missing keys; what is left is content of the wrong kind.
            present = [str(run_dir / name) for name in sources if (run_dir / name).exists()]
            raise PipelineError(
                f"{' or '.join(present) or run_dir}: unexpected content for report section {number} "
                f"({title}): {type(exc).__name__}: {_one_line(exc)}",
                hint="the file is damaged or from another version; rerun the stage that writes it",
            ) from exc
        sections.append(Section(number, anchor, title, blocks))
    name = text(g(run.splits, "dataset", "name"))
    title = f"tinyml report: {name}"
    meta = f"run directory {run_dir.resolve()}; generated {time.strftime('%Y-%m-%d %H:%M:%S %z')}"
    top = glance(run)
    page = render_html(title, meta, top, sections)
    md = render_md(title, meta, top, sections)
    html_path = write_text(run_dir / HTML, page)
    md_path = write_text(run_dir / MD, md)
    out(f"report: wrote {html_path} and {md_path}")
    return html_path, md_path


def refresh_report(run_dir: str | Path, out=print) -> tuple[Path, Path] | None:
    """What each stage calls at its end: rebuild the report, and never fail the stage for it."""
    try:
        return build_report(run_dir, out=out)
    except Exception as exc:
        out(f"warning: report not refreshed: {_one_line(exc)} (run `tinyml report --run {run_dir}` for details)")
        return None
