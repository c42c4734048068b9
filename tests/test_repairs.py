"""Repairs instead of refusals (issue 21 section 1): cuts of one recording across a predefined
test split are quarantined from training and validation, listed in splits.json, at the top of
the audit and of the report, and the run goes on; ``[split] strict`` refuses instead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ei_fixtures as fx
import numpy as np
import pytest

from pipeline.audit import stage as audit_stage
from pipeline.audit.leakage import check_shared_segments
from pipeline.audit.stage import audit_document, format_report, run_audit
from pipeline.core.config import SplitConfig, load_config
from pipeline.core.errors import GateFailed
from pipeline.data.cuts import cut_links, linked_groups, shared_stretches
from pipeline.data.dataset import Dataset
from pipeline.data.load import load_dataset
from pipeline.data.repairs import REPAIR_KEYS, repair, repair_lines
from pipeline.data.splits import (
    MANIFEST,
    Prepared,
    SplitPlan,
    make_windows,
    manifest,
    plan_split,
    prepare,
)

pytestmark = pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")
ROOT = Path(__file__).resolve().parents[1]
CUTS = "wave.Wave.3b4m1pql.s2.cbor.5n3ba6je.ingestion-5dc7597686-fqvwl.s"


def audit(path, **overrides):
    cfg = load_config(overrides={"data.dataset": str(path), **overrides})
    prepared = prepare(cfg, "unused", write=False)
    report = run_audit(prepared, cfg)
    return prepared, report, {c["id"]: c for c in report["checks"]}


def tinyml(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyml_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=600)


def quarantine_of(man: dict) -> dict:
    (q,) = [r for r in man["repairs"] if r["kind"] == "quarantined_cuts"]
    return q


# --------------------------------------------------------------------------- split-sample cuts


def test_split_sample_cuts_are_quarantined_and_the_test_split_kept(tmp_path):
    path = fx.export_split_sample_cuts(tmp_path / "x")
    prepared, report, checks = audit(path)
    ds, man = prepared.dataset, prepared.manifest
    # The author's test split, exactly: every testing file and nothing else.
    assert sorted(man["splits"]["test"]) == sorted(ds.sample_ids[ds.predefined_split == "test"].tolist())
    q = quarantine_of(man)
    assert set(q) == set(REPAIR_KEYS) and isinstance(q["what"], str) and "\n" not in q["what"]
    assert q["count"] == 4 and sorted(i["sample"] for i in q["items"]) == [f"{CUTS}{k}" for k in (1, 2, 3, 4)]
    # Listed with the rows they share: cut 4 shares 18 rows with test cut 5; the rest by name.
    rows = {i["sample"][-2:]: i["shared_rows"] for i in q["items"]}
    assert rows == {"s4": {f"{CUTS}5": 18}, "s1": {}, "s2": {}, "s3": {}}
    assert q["items"][0]["sample"].endswith(".s4")  # shared rows first
    # Quarantined, not deleted: out of train and val, in the plan's excluded, still in the dataset.
    quarantined = {i["sample"] for i in q["items"]}
    assert not quarantined & set(man["splits"]["train"] + man["splits"]["val"])
    assert set(next(iter(man["excluded"].values()))) == quarantined and len(ds) == 96
    assert report["errors_failed"] == [] and checks["shared_segments"]["passed"]
    assert checks["shared_segments"]["detail"]["quarantined"] == 4
    lines = format_report(audit_document(prepared, report))
    assert lines[0].startswith("WARNING: 1 repair(s)") and "quarantined_cuts, 4" in lines[1]
    assert "shares 18 rows with" in lines[2]


def test_strict_refuses_the_split_sample_cuts(tmp_path):
    path = fx.export_split_sample_cuts(tmp_path / "x")
    prepared, report, checks = audit(path, **{"split.strict": True})
    assert prepared.manifest["repairs"] == [] and prepared.manifest["strict"] is True
    c = checks["shared_segments"]
    assert not c["passed"] and c["severity"] == "error" and "shared_segments" in report["errors_failed"]
    # Every pair across the split: 4 training cuts x 2 test cuts, one of them sharing 18 rows.
    assert c["detail"]["pairs"] == 8 and c["detail"]["by_link"] == {"stretch": 1, "name": 7}
    assert c["detail"]["examples"][0]["shared_rows"] == 18


def test_audit_cli_repairs_with_exit_0_and_strict_refuses(tmp_path):
    path = fx.export_split_sample_cuts(tmp_path / "x")
    run = tmp_path / "run"
    r = tinyml("audit", "--dataset", path, "--run", run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0].startswith("WARNING: 1 repair(s) to the data")
    man = json.loads((run / MANIFEST).read_text())
    assert quarantine_of(man)["count"] == 4
    assert json.loads((run / "audit.json").read_text())["repairs"] == man["repairs"]
    md = (run / "report.md").read_text()
    glance = md.split("## At a glance", 1)[1]
    assert glance.splitlines()[4].startswith("| data repairs | **REPAIRED (1)** |")  # the glance's first row
    assert "Repairs to the data" in md.split("## 1.", 1)[1].split("###")[1]  # first in section 1
    # --strict (in process, the CLI maps GateFailed to exit 1): a split made to be refused is
    # another split, so splits.json is not reused; the audit refuses.
    cfg = load_config(overrides={"data.dataset": str(path), "split.strict": True})
    with pytest.raises(GateFailed, match="shared_segments"):
        audit_stage.run(cfg, run, out=lambda _: None)
    assert json.loads((run / MANIFEST).read_text())["repairs"] == []


# --------------------------------------------------------------------------- two uploads of one recording


def test_two_uploads_under_two_ids_are_one_recording(tmp_path):
    path = fx.export_two_uploads(tmp_path / "x")
    ds = load_dataset(str(path))
    train_id = "updown.phone.7a.5p48ltra.ingestion-54c4c64498-nkn7w.s1"
    test_id = "updown.phone.7a.5p669cj9.ingestion-54c4c64498-pc7gv.s1"
    links = [(ds.sample_ids[a], ds.sample_ids[b], why) for a, b, why in cut_links(ds)]
    assert links == [(test_id, train_id, "stretch")] or links == [(train_id, test_id, "stretch")]
    prepared, report, checks = audit(path)
    q = quarantine_of(prepared.manifest)
    assert q["items"] == [{"sample": train_id, "test": [test_id], "shared_rows": {test_id: 16},
                           "text": q["items"][0]["text"]}]
    assert train_id not in prepared.manifest["splits"]["train"] + prepared.manifest["splits"]["val"]
    assert report["errors_failed"] == []
    _, report, checks = audit(path, **{"split.strict": True})
    assert not checks["shared_segments"]["passed"] and checks["shared_segments"]["detail"]["pairs"] == 1


# --------------------------------------------------------------------------- time splits, every pair


def test_time_split_keeps_cuts_together_and_runs_shared_segments(tmp_path):
    path = fx.export_overlapping_cuts(tmp_path / "x")
    prepared, _, checks = audit(path, **{"split.strategy": "time"})
    man = prepared.manifest
    cuts = [f"wave.cut{k}" for k in range(3)]
    where = {c: [s for s in man["splits"] if c in man["splits"][s]] for c in cuts}
    assert len({tuple(w) for w in where.values()}) == 1  # one split (or all left in one gap)
    c = checks["shared_segments"]
    assert c["severity"] == "error" and c["passed"]
    # The check itself on a time split that put the cuts apart: it runs, and fails.
    ds, plan = prepared.dataset, prepared.plan
    pos = {s: i for i, s in enumerate(ds.sample_ids.tolist())}
    idx = {s: np.asarray([i for i in plan.indices[s] if ds.sample_ids[i] not in cuts], np.int64)
           for s in plan.indices}
    idx["train"] = np.sort(np.r_[idx["train"], pos["wave.cut0"]])
    idx["test"] = np.sort(np.r_[idx["test"], pos["wave.cut1"]])
    apart = Prepared(ds, SplitPlan(**{**plan.__dict__, "indices": idx}), prepared.windows, man, reused=False)
    c = check_shared_segments(apart)
    assert not c["passed"] and c["detail"]["pairs"] == 1


def _three_sharing(steps: int = 40) -> Dataset:
    """Three samples holding one stretch of ``steps`` identical rows, and a fourth apart."""
    rng = np.random.default_rng(3)
    common = rng.normal(size=(steps, 3)).astype(np.float32)
    samples = [np.concatenate([rng.normal(size=(30 + 7 * k, 3)).astype(np.float32), common,
                               rng.normal(size=(25, 3)).astype(np.float32)]) for k in range(3)]
    samples.append(rng.normal(size=(120, 3)).astype(np.float32))
    return Dataset(name="three", source="three", kind="timeseries", samples=samples, labels=[0, 1, 0, 1],
                   label_names=("a", "b"), recording_ids=list("pqrs"), group_ids=list("pqrs"),
                   start_times=[0.0, 1.0, 2.0, 3.0], sample_ids=list("pqrs"), rate_hz=50.0)


def test_three_samples_sharing_one_stretch_count_three_pairs():
    ds = _three_sharing()
    pairs = shared_stretches(ds)
    assert sorted(pairs) == [(0, 1), (0, 2), (1, 2)]  # not only neighbours in hash order
    assert all(0 < v <= 1 for v in pairs.values())
    plan = SplitPlan(strategy="group", group_by="recording", seed=0,
                     indices={"train": np.array([0, 3]), "val": np.array([1]), "test": np.array([2])},
                     window_length=20, window_stride=20, window_ms=400.0, stride_ms=400.0)
    windows = make_windows(ds, plan)
    prepared = Prepared(ds, plan, windows, manifest(ds, plan, windows, {}), reused=False)
    c = check_shared_segments(prepared)
    assert not c["passed"] and c["detail"]["pairs"] == 3
    assert {e["shared_rows"] for e in c["detail"]["examples"]} == {40}
    # For the splitter the three are one recording; the fourth is its own.
    groups = linked_groups(ds.recording_ids, cut_links(ds))
    assert groups[0] == groups[1] == groups[2] != groups[3]


# --------------------------------------------------------------------------- the record


def test_loader_repairs_are_carried_into_splits_json_and_shown_first(tmp_path):
    path = fx.export_split_sample_cuts(tmp_path / "x")
    ds = load_dataset(str(path))
    mine = repair("skipped_files", "2 file(s) listed in info.labels are missing: skipped", ["a.json", "b.json"])
    ds.notes["repairs"] = [mine]
    plan = plan_split(ds, SplitConfig(), 0)
    windows = make_windows(ds, plan)
    man = manifest(ds, plan, windows, {})
    assert [r["kind"] for r in man["repairs"]] == ["skipped_files", "quarantined_cuts"]
    lines = repair_lines(man["repairs"])
    assert lines[0].startswith("WARNING: 2 repair(s)")
    assert "repaired (skipped_files, 2): 2 file(s) listed" in lines[1] and lines[2].endswith("- a.json")
    assert repair_lines([]) == []
