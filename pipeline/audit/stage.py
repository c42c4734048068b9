"""The data audit stage: leakage and data-quality checks on a prepared split (``audit.json``).

Every check is a plain dict (``pipeline.audit.pool.finding``): ``id``, ``severity`` (error,
warning, info), ``passed``, a short ``message`` and a ``detail`` with counts and the
offending ids. A failed error stops ``tinyml audit`` and ``tinyml train`` (exit 1) unless
``--allow-leakage`` is given, and the override is written into ``audit.json``.

The checks, by family: ``leakage`` (what the model could have seen of what it is scored on),
``confounding`` (what else goes with the class), ``quality`` (the data itself). The
model-based checks use one fast baseline (``summary_features`` -> StandardScaler ->
LogisticRegression) cross-validated with the pipeline's own splitter on the training and
validation windows; only ``label_issues`` also scores test windows with a model, and says
why that is not a look at the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.audit import confounding, leakage, quality
from pipeline.audit.fixes import FIXES
from pipeline.audit.pool import Pool, finding, id_list, make_pool, summary_features
from pipeline.core.artifacts import remove_downstream, write_json
from pipeline.core.errors import GateFailed
from pipeline.core.stage import StageResult
from pipeline.data.repairs import repair_lines
from pipeline.data.splits import SPLITS, Prepared, prepare
from pipeline.ml.outliers import outlier_scores

AUDIT = "audit.json"
RANK = {"error": 0, "warning": 1, "info": 2}


def _summary(prepared: Prepared, pool: Pool, checks: dict, z: np.ndarray) -> dict:
    ds, plan = prepared.dataset, prepared.plan
    rate = ds.rate_hz
    lengths = ds.lengths

    def stats(idx):
        v = lengths[idx]
        out = {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
        if rate and not ds.windowed:
            out["seconds"] = {k: round(val / rate, 3) for k, val in out.items()}
        return out

    worst = np.argsort(-z)[:10]
    return {
        "strategy": plan.strategy, "group_by": plan.group_by, "seed": plan.seed,
        "window": {"length": plan.window_length, "stride": plan.window_stride},
        "samples": {s: int(plan.indices[s].size) for s in SPLITS},
        "windows": {s: int((pool.split == k).sum()) for k, s in enumerate(SPLITS)},
        "class_counts": quality.class_counts(pool, ds.label_names),
        "groups": ({s: id_list(ds.group_ids[plan.indices[s]], 100) for s in SPLITS} if ds.has_groups else None),
        "recordings": {s: int(np.unique(ds.recording_ids[plan.indices[s]]).size) for s in SPLITS},
        "recording_lengths": {"all": stats(np.arange(len(ds))), **{s: stats(plan.indices[s]) for s in SPLITS}},
        "worst_outliers": [{"window": pool.window_ids[i], "split": SPLITS[pool.split[i]], "z": round(float(z[i]), 1)}
                           for i in worst if z[i] > 0],
        "duplicates": {"within_split": checks["within_split_duplicates"]["detail"]["recording_pairs"][:20],
                       "cross_split": checks["cross_split_duplicates"]["detail"]["recordings"]},
        "label_issues": checks["label_issues"]["detail"].get("recordings", []),
        "excluded": plan.excluded,
        "notes": list(plan.notes),
        "padded": {s: int(np.count_nonzero(pool.padded[pool.split == k])) for k, s in enumerate(SPLITS)}
        if pool.padded is not None else {},
    }


def run_audit(prepared: Prepared, cfg) -> dict:
    """Every check on a prepared split. Pure: reads nothing, writes nothing; deterministic per seed."""
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread: these models are small, and on a busy 2-core machine threads
    # that spin waiting for each other made a 20 ms fit take 2 s.
    with threadpool_limits(limits=1):
        return _run_audit(prepared, cfg)


def _measured(cid: str, check, *args) -> dict:
    """A model-based check; on data too small to cross-validate (a fold with one class), info."""
    try:
        return check(*args)
    except ValueError as exc:
        return finding(cid, "info", True, f"not measured: the training and validation data are too small "
                                          f"to cross-validate ({exc})")


def _run_audit(prepared: Prepared, cfg) -> dict:
    acfg, seed, folds = cfg.audit, cfg.seed, cfg.split.folds
    ds = prepared.dataset
    names = ds.label_names
    pool = make_pool(prepared)
    F = summary_features(pool.X)
    dup_sets = leakage.duplicate_sets(pool)
    z = outlier_scores(pool.X, pool.X[pool.split == 0])
    checks = [
        leakage.check_group_overlap(prepared),
        leakage.check_cross_split_duplicates(pool, dup_sets),
        leakage.check_near_duplicates(pool, acfg, seed, names),
        leakage.check_shared_segments(prepared),
        leakage.check_window_overlap(pool, ds.rate_hz),
        leakage.check_temporal_order(pool, prepared.plan),
        quality.check_missing_classes(pool, names),
        quality.check_non_finite(pool),
        _measured("permutation_test", quality.check_permutation_test, pool, F, acfg, folds, seed),
        quality.check_class_imbalance(pool, names),
        confounding.check_group_label_confounding(pool, ds, acfg, seed),
        confounding.check_acquisition_confounding(pool, ds, acfg, seed),
        _measured("identifier_label", confounding.check_identifier_label, pool, ds, acfg, folds, seed),
        quality.check_constant_channels(pool, ds.channel_names),
        quality.check_outliers(pool, acfg, z),
        leakage.check_within_split_duplicates(pool, dup_sets),
        _measured("label_issues", quality.check_label_issues, pool, F, names, acfg, folds, seed),
        _measured("split_optimism", leakage.check_split_optimism, pool, F, prepared.plan, acfg, folds, seed),
    ]
    by_id = {c["id"]: c for c in checks}
    # Failed errors first, then failed warnings, then the rest; stable within each.
    checks.sort(key=lambda c: (c["passed"], RANK[c["severity"]]))
    return {
        "checks": checks,
        "summary": _summary(prepared, pool, by_id, z),
        "errors_failed": [c["id"] for c in checks if c["severity"] == "error" and not c["passed"]],
        "warnings_failed": [c["id"] for c in checks if c["severity"] == "warning" and not c["passed"]],
    }


def format_report(doc: dict) -> list[str]:
    """The lines a person reads: any repairs to the data (a warning), counts per split, then
    every check, failures first."""
    s = doc["summary"]
    names = list(next(iter(s["class_counts"].values())))
    # Repairs first: what the pipeline changed in the data is the first thing a person reads.
    lines = repair_lines(doc.get("repairs"))
    lines += [f"audit: {doc['dataset']['name']} split by {s['group_by']} (strategy {s['strategy']}, seed {s['seed']}), "
             f"windows of {s['window']['length']} steps every {s['window']['stride']}"]
    head = f"  {'split':<6}{'samples':>8}{'windows':>8}{'recs':>6}{'groups':>7}  " + "  ".join(names)
    lines.append(head)
    for sp in SPLITS:
        groups = len(s["groups"][sp]) if s["groups"] else "-"
        counts = "  ".join(f"{s['class_counts'][sp][n]:>{len(n)}}" for n in names)
        lines.append(f"  {sp:<6}{s['samples'][sp]:>8}{s['windows'][sp]:>8}{s['recordings'][sp]:>6}{groups:>7}  {counts}")
    if s["groups"]:
        for sp in ("val", "test"):
            lines.append(f"  {sp} groups: {', '.join(s['groups'][sp][:12])}{' ...' if len(s['groups'][sp]) > 12 else ''}")
    for note in s.get("notes", []):
        lines.append(f"  note: {note}")
    if any((s.get("padded") or {}).values()):
        lines.append("  zero-padded windows ([split] pad = \"zero\"): "
                     + ", ".join(f"{sp} {n}" for sp, n in s["padded"].items()))
    rl = s["recording_lengths"]["all"]
    secs = f" ({rl['seconds']['min']:g}..{rl['seconds']['max']:g} s)" if "seconds" in rl else ""
    lines.append(f"  sample lengths: {rl['min']}..{rl['max']} steps{secs}, median {rl['median']:g}")
    for c in doc["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        lines.append(f"  {mark} {c['severity']:<7} {c['id']:<24} {c['message']}")
    if s["worst_outliers"]:
        lines.append("  worst outliers: " + ", ".join(f"{o['window']} (z={o['z']:g})" for o in s["worst_outliers"][:5]))
    dup = s["duplicates"]
    if dup["within_split"] or dup["cross_split"]:
        pairs = [" = ".join(dict.fromkeys(p["recordings"])) for p in dup["within_split"][:6]]
        lines.append("  duplicates: " + "; ".join(pairs + ([f"across splits: {', '.join(dup['cross_split'][:6])}"]
                                                           if dup["cross_split"] else [])))
    if s["label_issues"]:
        lines.append("  label issues: " + ", ".join(s["label_issues"][:10]))
    if doc.get("override"):
        lines.append(f"  OVERRIDDEN by --allow-leakage: {', '.join(doc['override']['checks'])}")
    return lines


def run(cfg, run_dir, *, out=print, allow_leakage: bool = False) -> StageResult:
    """The audit stage: split (``splits.json``, reused when it matches the config), audit,
    write ``audit.json``. A failed error check raises GateFailed (after writing the report)
    unless ``allow_leakage``, in which case the override is recorded. The prepared split is
    handed on in ``reuse["prepared"]`` for the train stage of the same process."""
    run_dir = Path(run_dir)
    prepared = prepare(cfg, run_dir)
    if not prepared.reused:  # a new split: every model and score made on the old one is stale
        remove_downstream(run_dir, "audit")
    doc = audit_document(prepared, run_audit(prepared, cfg), allow_leakage)
    path = write_json(run_dir / AUDIT, doc)
    skipped = prepared.manifest.get("skipped") or {}
    if skipped:
        # Nothing is dropped silently: what the loader or the windowing passed over, counted.
        out("data: skipped " + ", ".join(f"{n} ({why})" for why, n in skipped.items()))
    for line in format_report(doc):
        out(line)
    failed = doc["errors_failed"]
    if failed and not allow_leakage:
        fixes = [f"{c}: {FIXES[c]}" for c in failed if c in FIXES]
        raise GateFailed(
            f"audit: {len(failed)} error-level check(s) failed: {', '.join(failed)} (details in {path})",
            hint="; ".join(fixes + [f"or pass --allow-leakage to go on anyway (recorded in {AUDIT})"]),
        )
    return StageResult(stage="audit", report_path=path, report=doc, reuse={"prepared": prepared})


def audit_document(prepared: Prepared, report: dict, allow_leakage: bool = False) -> dict:
    """``audit.json``: the dataset, the split, every check (``run_audit``) and any override."""
    plan = prepared.plan
    doc = {
        "version": 1,
        "dataset": prepared.dataset.summary(),
        "split": {"strategy": plan.strategy, "group_by": plan.group_by, "seed": plan.seed,
                  "predefined_test": plan.predefined_test, "reused": prepared.reused,
                  "test_sha256": prepared.manifest["test_sha256"]},
        # Every repair, the loader's and the split's (splits.json "repairs"; pipeline.data.repairs).
        "repairs": list(prepared.manifest.get("repairs") or []),
        **report,
        "passed": not report["errors_failed"],
        "allow_leakage": bool(allow_leakage),
    }
    failed = report["errors_failed"]
    if allow_leakage and failed:
        doc["override"] = {"checks": list(failed), "by": "--allow-leakage",
                           "note": "error-level findings were overridden; every score of this run is suspect"}
    return doc


def audit_stage(cfg, run_dir, allow_leakage: bool = False, out=print) -> tuple[Prepared, dict]:
    """``run`` as the train stage calls it today: (prepared split, ``audit.json`` content).
    Kept until train receives the prepared split from the CLI (``StageResult.reuse``)."""
    result = run(cfg, run_dir, out=out, allow_leakage=allow_leakage)
    return result.reuse["prepared"], result.report
