"""The audit: each injected defect is flagged, the motion dataset's known defects are found,
and the CLI refuses error-level findings unless --allow-leakage (which is recorded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reach import must_reach
from test_splits import datasets as split_datasets

from pipeline.audit.leakage import _nearest, _standardized_rows, _variation, check_near_duplicates
from pipeline.audit.pool import make_pool, summary_features
from pipeline.audit.stage import audit_stage, run_audit
from pipeline.core.artifacts import to_json
from pipeline.core.config import SplitConfig, load_config
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.data.dataset import Dataset
from pipeline.data.splits import (
    SPLITS,
    Prepared,
    SplitPlan,
    make_windows,
    manifest,
    plan_split,
    prepare,
)
from pipeline.data.windows import window_steps

pytestmark = pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")

RATE = 20.0
CFG = load_config(overrides={"split.window_ms": 1000.0, "split.stride_ms": 500.0})


def gestures(subjects=8, per_class=2, k=3, seconds=5.0, seed=0, one_class_per_subject=False) -> Dataset:
    """Recordings of k oscillations (1, 2, 3 Hz ...) by several subjects, 20 Hz, 2 axes."""
    rng = np.random.default_rng(seed)
    samples, labels, recs, groups, starts = [], [], [], [], []
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    for s in range(subjects):
        gain = rng.uniform(0.8, 1.2)
        for r in range(per_class * k):
            c = s % k if one_class_per_subject else r % k
            phase = rng.uniform(0, 2 * np.pi)
            x = np.stack([np.sin(2 * np.pi * (1 + c) * t + phase), np.cos(2 * np.pi * (1 + c) * t + phase)], axis=1)
            samples.append((gain * x + rng.normal(0, 0.3, size=(n, 2))).astype(np.float32))
            labels.append(c)
            recs.append(f"s{s:02d}.r{r:02d}")
            groups.append(f"s{s:02d}")
            starts.append(1000.0 * s + 10.0 * r)
    return Dataset(
        name="gestures", source="test:gestures", kind="timeseries", samples=samples, labels=labels,
        label_names=tuple(f"c{c}" for c in range(k)), recording_ids=recs, group_ids=groups,
        start_times=starts, sample_ids=recs, rate_hz=RATE, channel_names=("x", "y"),
        has_groups=True, has_recordings=True,
    )


def with_samples(ds: Dataset, order=None, extra=(), **changes) -> Dataset:
    """A copy of ``ds`` reordered by ``order`` and/or with extra (sample, label, rec, group, start) rows."""
    order = np.arange(len(ds)) if order is None else np.asarray(order)
    fields = {
        "samples": [ds.samples[i] for i in order] + [e[0] for e in extra],
        "labels": np.concatenate([ds.labels[order], [e[1] for e in extra]]).astype(np.int64),
        "recording_ids": np.concatenate([ds.recording_ids[order], [e[2] for e in extra]]),
        "group_ids": np.concatenate([ds.group_ids[order], [e[3] for e in extra]]),
        "start_times": np.concatenate([ds.start_times[order], [e[4] for e in extra]]),
    }
    fields["sample_ids"] = fields["recording_ids"]
    fields.update(changes)
    return Dataset(name=ds.name, source=ds.source, kind=ds.kind, label_names=ds.label_names, rate_hz=ds.rate_hz,
                   channel_names=ds.channel_names, windowed=ds.windowed, has_groups=ds.has_groups,
                   has_recordings=ds.has_recordings, **fields)


def prepared_by_hand(ds: Dataset, split_of_group: dict[str, str] | None = None, split_of_sample=None,
                     strategy="group", group_by="group", predefined_test=False) -> Prepared:
    """A Prepared with the split given, as a broken or foreign splitter would make it."""
    if split_of_sample is None:
        split_of_sample = [split_of_group[g] for g in ds.group_ids]
    split_of_sample = np.asarray(split_of_sample)
    length, stride = window_steps(ds, 1000.0, 500.0)
    plan = SplitPlan(strategy=strategy, group_by=group_by, seed=0,
                     indices={s: np.flatnonzero(split_of_sample == s) for s in SPLITS},
                     window_length=length, window_stride=stride, window_ms=1000.0, stride_ms=500.0,
                     predefined_test=predefined_test)
    windows = make_windows(ds, plan)
    return Prepared(ds, plan, windows, manifest(ds, plan, windows, {}), reused=False)


# Eight subjects: five to train, one to validate, two to test.
SPLIT_OF_GROUP = {"s00": "train", "s01": "train", "s02": "train", "s03": "train", "s04": "train",
                  "s05": "val", "s06": "test", "s07": "test"}


def by_id(report: dict) -> dict:
    return {c["id"]: c for c in report["checks"]}


def test_report_shape_and_clean_data_passes():
    ds = gestures()
    report = run_audit(prepared_by_hand(ds, SPLIT_OF_GROUP), CFG)
    checks = by_id(report)
    expected = {"group_overlap", "cross_split_duplicates", "near_duplicates", "shared_segments", "window_overlap",
                "temporal_order", "acquisition_confounding",
                "missing_classes", "class_imbalance", "group_label_confounding", "identifier_label", "non_finite",
                "constant_channels", "outliers", "within_split_duplicates", "label_issues", "permutation_test",
                "split_optimism"}
    assert set(checks) == expected
    for c in report["checks"]:
        assert set(c) == {"id", "severity", "passed", "message", "detail"}
        assert c["severity"] in ("error", "warning", "info") and c["message"]
    assert report["errors_failed"] == [] and report["warnings_failed"] == [], report["warnings_failed"]
    assert report["summary"]["class_counts"]["test"] == {"c0": 36, "c1": 36, "c2": 36}
    assert report["summary"]["groups"]["test"] == ["s06", "s07"]
    json.loads(to_json(report))  # JSON-safe, no NaN


def test_cross_split_duplicates_are_an_error():
    ds = gestures()
    original = int(np.flatnonzero(ds.recording_ids == "s06.r00")[0])  # a test recording ...
    copy = (ds.samples[original].copy(), ds.labels[original], "s00.r99", "s00", 99.0)  # ... re-uploaded by a training subject
    report = run_audit(prepared_by_hand(with_samples(ds, extra=[copy]), SPLIT_OF_GROUP), CFG)
    check = by_id(report)["cross_split_duplicates"]
    assert not check["passed"] and check["severity"] == "error"
    assert set(check["detail"]["recordings"]) == {"s06.r00", "s00.r99"}
    assert "cross_split_duplicates" in report["errors_failed"]
    assert report["errors_failed"][0] == report["checks"][0]["id"]  # failed errors come first


def test_near_duplicates_across_splits_are_flagged():
    ds = gestures()
    rng = np.random.default_rng(1)
    extra = []
    for r in ("s06.r00", "s06.r01", "s07.r02"):
        i = int(np.flatnonzero(ds.recording_ids == r)[0])
        noisy = ds.samples[i] + rng.normal(0, 1e-3, ds.samples[i].shape).astype(np.float32)
        extra.append((noisy, ds.labels[i], f"s00.copy-of-{r}", "s00", 500.0 + len(extra)))
    report = run_audit(prepared_by_hand(with_samples(ds, extra=extra), SPLIT_OF_GROUP), CFG)
    checks = by_id(report)
    assert checks["cross_split_duplicates"]["passed"]  # not exact copies ...
    near = checks["near_duplicates"]
    assert not near["passed"]  # ... but near ones
    assert {"s06.r00", "s06.r01", "s07.r02"} <= set(near["detail"]["recordings"])
    assert near["detail"]["flagged"] == 27  # every window of the three recordings


@pytest.mark.parametrize("shift", ["level", "gain"])
def test_copies_shifted_in_level_or_gain_are_refused(shift):
    """Training windows placed in test again, offset by two thirds of the level spread or read
    1.5 times larger (tests/copies.py): every copy is a near-duplicate error."""
    from copies import SPLIT_OF_GROUP as IMU_SPLIT
    from copies import gain_shifted_copies, level_shifted_copies

    ds, copies = (level_shifted_copies if shift == "level" else gain_shifted_copies)()
    pool = make_pool(prepared_by_hand(ds, IMU_SPLIT))
    check = check_near_duplicates(pool, CFG.audit, CFG.seed, ds.label_names)
    assert not check["passed"] and check["severity"] == "error"
    assert check["detail"]["flagged"] == len(copies) == 6
    assert set(copies) <= set(check["detail"]["recordings"])
    assert check["detail"]["flagged_by_view"][shift] == 6
    assert check["detail"]["by_split"] == {"val": 0, "test": 6}
    # What the fixture is for: the old rule (nearest by the raw window, level included, judged
    # by the variation) missed them: the copies' ratios to those neighbours were 0.33 (gain)
    # or about 1 (level: 4 of 6, whose nearest raw window was another one).
    Z = _standardized_rows(pool)
    S, var = _variation(Z, pool.X.shape[1:])
    q = np.flatnonzero(np.isin(pool.recording_ids, copies))
    _, old = _nearest(Z, q, pool.where("train", "val"))
    old_ratio = np.linalg.norm(S[q] - S[old], axis=1) / var[q]
    assert np.sum(old_ratio >= CFG.audit.near_duplicate_ratio) >= 4


def test_the_copies_base_is_clean_and_a_sample_says_so():
    from copies import SPLIT_OF_GROUP as IMU_SPLIT
    from copies import imu_windows

    ds = imu_windows()
    pool = make_pool(prepared_by_hand(ds, IMU_SPLIT))
    check = check_near_duplicates(pool, CFG.audit, CFG.seed, ds.label_names)
    assert check["passed"] and check["detail"]["smallest_ratio"] > 0.3, check["message"]  # 0.41
    assert not check["detail"]["sampled"] and "sampled" not in check["message"]
    few = load_config(overrides={"audit.max_distance_queries": 50}).audit
    check = check_near_duplicates(pool, few, CFG.seed, ds.label_names)
    n = check["detail"]["candidates"]
    assert check["detail"]["sampled"] and check["detail"]["queries"] == 50 and n == 192  # 1 + 2 subjects x 64
    assert f"sampled 50 of {n} validation/test windows" in check["message"]


def test_group_in_two_splits_is_an_error_when_the_pipeline_split():
    ds = gestures()
    split = [SPLIT_OF_GROUP[g] for g in ds.group_ids]
    split[int(np.flatnonzero(ds.recording_ids == "s00.r00")[0])] = "test"  # subject s00 on both sides
    check = by_id(run_audit(prepared_by_hand(ds, split_of_sample=split), CFG))["group_overlap"]
    assert not check["passed"] and check["severity"] == "error"
    assert check["detail"]["groups_in_two_splits"] == {"train/test": ["s00"]}
    assert check["detail"]["recordings_in_two_splits"] == {}


def test_group_in_two_splits_is_a_warning_for_a_predefined_test_split():
    ds = gestures()
    split = [SPLIT_OF_GROUP[g] for g in ds.group_ids]
    split[int(np.flatnonzero(ds.recording_ids == "s00.r00")[0])] = "test"
    prepared = prepared_by_hand(ds, split_of_sample=split, predefined_test=True)
    check = by_id(run_audit(prepared, CFG))["group_overlap"]
    assert not check["passed"] and check["severity"] == "warning"
    assert "known subjects" in check["message"] and "new-subject" in check["message"]


def test_time_split_groups_on_both_sides_warn_but_recordings_never_may():
    ds = gestures()
    # Chronological by recording: each subject's early recordings train, later ones test.
    rank = np.array([int(r.split(".r")[1]) for r in ds.recording_ids])
    split = np.where(rank < 4, "train", np.where(rank < 5, "val", "test"))
    ds_time = with_samples(ds, start_times=10.0 * rank + np.array([int(g[1:]) for g in ds.group_ids]) * 0.5)
    checks = by_id(run_audit(prepared_by_hand(ds_time, split_of_sample=split, strategy="time", group_by="recording"), CFG))
    assert checks["group_overlap"]["severity"] == "warning" and not checks["group_overlap"]["passed"]
    assert "later time" in checks["group_overlap"]["message"]
    assert checks["temporal_order"]["passed"] and checks["temporal_order"]["severity"] == "error"
    # The same split, but test recordings start before training ones end: an error.
    ds_bad = with_samples(ds, start_times=np.where(split == "test", 0.0, 10.0 * rank))
    checks = by_id(run_audit(prepared_by_hand(ds_bad, split_of_sample=split, strategy="time", group_by="recording"), CFG))
    assert not checks["temporal_order"]["passed"] and checks["temporal_order"]["severity"] == "error"


def npz_like(recording_rows=30, step_s=0.5) -> Dataset:
    """Windowed rows (1 s each) cut every ``step_s`` from 8 recordings, as an NPZ would hold them."""
    rng = np.random.default_rng(0)
    samples, labels, recs, starts = [], [], [], []
    for r in range(8):
        for j in range(recording_rows):
            samples.append(rng.normal(size=(20, 2)).astype(np.float32) + r % 2)
            labels.append(r % 2), recs.append(f"rec{r}"), starts.append(100.0 * r + j * step_s)
    ids = [f"row{i:04d}" for i in range(len(samples))]
    return Dataset(name="rows", source="test:rows", kind="timeseries", samples=samples, labels=labels,
                   label_names=("a", "b"), recording_ids=recs, group_ids=recs, start_times=starts,
                   sample_ids=ids, rate_hz=RATE, channel_names=("x", "y"), windowed=True, has_recordings=True)


def test_overlapping_windows_across_splits_are_an_error():
    ds = npz_like(step_s=0.5)  # consecutive rows share half their time steps
    split = np.array([{0: "train", 1: "train", 2: "train", 3: "train", 4: "val", 5: "val", 6: "test", 7: "test"}[int(r[3:])]
                      for r in ds.recording_ids])
    split[(ds.recording_ids == "rec0") & (np.arange(len(ds)) % 2 == 1)] = "test"  # odd rows of rec0 tested
    check = by_id(run_audit(prepared_by_hand(ds, split_of_sample=split, group_by="recording"), CFG))["window_overlap"]
    assert not check["passed"] and check["severity"] == "error"
    assert check["detail"]["recordings"] == ["rec0"]
    assert check["detail"]["overlapping_pairs"] == 29  # each odd row overlaps its two even neighbours, minus the ends

    # Rows 1 s apart do not share time steps: the recording is still in two splits, but no window overlaps.
    ds = npz_like(step_s=1.0)
    checks = by_id(run_audit(prepared_by_hand(ds, split_of_sample=split, group_by="recording"), CFG))
    assert checks["window_overlap"]["passed"]
    assert not checks["group_overlap"]["passed"] and checks["group_overlap"]["detail"]["recordings_in_two_splits"]


def test_label_determined_by_subject_is_flagged():
    ds = gestures(subjects=9, one_class_per_subject=True)
    split_of_group = {**{f"s{s:02d}": "train" for s in range(6)}, "s06": "val", "s07": "test", "s08": "test"}
    report = run_audit(prepared_by_hand(ds, split_of_group), CFG)
    check = by_id(report)["group_label_confounding"]
    assert not check["passed"] and check["severity"] == "warning"
    assert check["detail"]["score"] > 0.9
    assert len(check["detail"]["groups_with_one_class"]) == 9
    assert by_id(run_audit(prepared_by_hand(gestures(), SPLIT_OF_GROUP), CFG))["group_label_confounding"]["passed"]


def test_data_sorted_by_label_is_flagged():
    ds = gestures()
    sorted_ds = with_samples(ds, order=np.argsort(ds.labels, kind="stable"))
    check = by_id(run_audit(prepared_by_hand(sorted_ds, SPLIT_OF_GROUP), CFG))["identifier_label"]
    assert not check["passed"] and check["severity"] == "warning"
    assert check["detail"]["balanced_accuracy"]["order"] > 0.9


def test_mislabeled_recordings_are_found_in_train_and_val_and_test_labels_are_not_read():
    ds = gestures()
    # Wrong labels in training and validation (seen out of fold), and one in test, left alone.
    wrong = {"s01.r00": 1, "s05.r01": 2, "s06.r04": 0}  # r00 is c0, r01 and r04 are c1
    labels = np.array([wrong.get(r, lab) for r, lab in zip(ds.recording_ids, ds.labels, strict=True)])
    check = by_id(run_audit(prepared_by_hand(with_samples(ds, labels=labels), SPLIT_OF_GROUP), CFG))["label_issues"]
    assert not check["passed"] and check["severity"] == "warning"
    found = {i["recording"]: (i["split"], i["label"], i["predicted"]) for i in check["detail"]["issues"]}
    assert found == {"s01.r00": ("train", "c1", "c0"), "s05.r01": ("val", "c2", "c1")}
    assert check["detail"]["splits_scored"] == ["train", "val"] and check["detail"]["test_recordings_not_scored"] == 12
    assert "12 test recording(s) are not scored" in check["message"]
    # Nothing about test labels reaches the finding: shuffled, they change nothing.
    test = np.isin(ds.group_ids, ["s06", "s07"])
    shuffled = labels.copy()
    shuffled[test] = np.random.default_rng(0).permutation(labels[test])
    again = by_id(run_audit(prepared_by_hand(with_samples(ds, labels=shuffled), SPLIT_OF_GROUP), CFG))["label_issues"]
    assert again == check


def test_missing_class_is_an_error():
    ds = gestures()
    split = [SPLIT_OF_GROUP[g] for g in ds.group_ids]
    split = ["val" if s == "test" and lab == 2 else s for s, lab in zip(split, ds.labels, strict=True)]
    check = by_id(run_audit(prepared_by_hand(ds, split_of_sample=split), CFG))["missing_classes"]
    assert not check["passed"] and check["detail"]["missing"] == {"test": ["c2"]}


def test_non_finite_windows_are_an_error():
    # Dataset rejects NaN itself; windows from elsewhere (a custom loader, augmentation) may not.
    prepared = prepared_by_hand(gestures(), SPLIT_OF_GROUP)
    prepared.windows["val"].X[3, 5, 1] = np.nan
    prepared.windows["train"].X[0, 0, 0] = np.inf
    report = run_audit(prepared, CFG)
    check = by_id(report)["non_finite"]
    assert not check["passed"] and check["severity"] == "error"
    assert sorted(check["detail"]["windows"]) == sorted([prepared.windows["val"].window_ids[3],
                                                         prepared.windows["train"].window_ids[0]])
    json.loads(to_json(report))


def test_dead_channel_and_spike_are_flagged():
    ds = gestures()
    i = int(np.flatnonzero(ds.recording_ids == "s01.r03")[0])
    ds.samples[i][:, 1] = 0.0  # a disconnected axis
    j = int(np.flatnonzero(ds.recording_ids == "s05.r02")[0])
    ds.samples[j][40, 0] = 60.0  # a knock
    checks = by_id(run_audit(prepared_by_hand(ds, SPLIT_OF_GROUP), CFG))
    assert not checks["constant_channels"]["passed"]
    assert checks["constant_channels"]["detail"]["recordings"] == ["s01.r03"]
    assert not checks["outliers"]["passed"]
    assert checks["outliers"]["detail"]["recordings"] == ["s05.r02"]


def fingerprinted(n_rec=60, channels=8) -> Dataset:
    """Pure noise, but each recording has its own offsets and noise levels: easy to memorize."""
    rng = np.random.default_rng(3)
    samples = [(rng.normal(size=channels) + rng.uniform(0.5, 2.0, channels) * rng.normal(size=(100, channels)))
               .astype(np.float32) for _ in range(n_rec)]
    recs = [f"r{i:03d}" for i in range(n_rec)]
    return Dataset(name="prints", source="test:prints", kind="timeseries", samples=samples,
                   labels=np.arange(n_rec) % 2, label_names=("a", "b"), recording_ids=recs, group_ids=recs,
                   start_times=np.arange(n_rec) * 10.0, sample_ids=recs, rate_hz=RATE,
                   channel_names=tuple(f"ch{c}" for c in range(channels)), has_recordings=True)


def test_permutation_test_catches_a_splitter_that_leaks_windows():
    ds = fingerprinted()
    split = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10)
    # Sound: cross-validation keeps recordings whole, so shuffled labels score chance.
    sound = by_id(run_audit(prepared_by_hand(ds, split_of_sample=split, group_by="recording"), CFG))["permutation_test"]
    assert sound["passed"], sound["detail"]
    # Leaky: windows of one recording land in different folds, and the baseline memorizes recordings.
    leaky = by_id(run_audit(prepared_by_hand(ds, split_of_sample=split, group_by="sample"), CFG))["permutation_test"]
    assert not leaky["passed"] and leaky["severity"] == "error"
    assert leaky["detail"]["mean"] > sound["detail"]["mean"] + 0.2


def test_summary_features_shapes():
    X = np.random.default_rng(0).normal(size=(5, 125, 3)).astype(np.float32)
    F = summary_features(X)
    assert F.shape == (5, 3 * 4 + 3 * 6 + 3) and np.isfinite(F).all()
    # Shift-invariant in time: a circularly shifted oscillation has the same band powers.
    t = np.arange(128) / 64.0
    a = np.sin(2 * np.pi * 4 * t)[None, :, None]
    b = np.roll(a, 5, axis=1)
    assert np.allclose(summary_features(a), summary_features(b), atol=1e-4)
    assert summary_features(np.zeros((2, 64, 64, 1))).shape == (2, 1024)


@must_reach(15)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(dataset=split_datasets(windowed=False), strategy=st.sampled_from(["group", "time"]), seed=st.integers(0, 20))
def test_pipeline_splits_pass_the_leakage_checks(dataset, strategy, seed):
    """Whatever the data, a split the pipeline makes passes the audit's leakage checks, and
    the audit of tiny data says "not measured" rather than crashing."""
    cfg = SplitConfig(strategy=strategy, window_ms=1000.0, stride_ms=500.0)
    try:
        plan = plan_split(dataset, cfg, seed)
        windows = make_windows(dataset, plan)
    except PipelineError:
        assume(False)  # too little data for three splits: the splitter says so; another example is drawn
    prepared = Prepared(dataset, plan, windows, manifest(dataset, plan, windows, {}), reused=False)
    report = run_audit(prepared, CFG)
    checks = by_id(report)
    for cid in ("group_overlap", "window_overlap", "cross_split_duplicates", "temporal_order", "non_finite",
                "shared_segments", "near_duplicates"):
        assert checks[cid]["passed"] or checks[cid]["severity"] == "warning", checks[cid]["message"]
    if strategy == "group" and plan.group_by == "group":
        assert checks["group_overlap"]["passed"]
    json.loads(to_json(report))


# --------------------------------------------------------------------------- the motion dataset


@pytest.fixture(scope="module")
def motion_audit(tmp_path_factory):
    cfg = load_config()
    prepared = prepare(cfg, tmp_path_factory.mktemp("motion"), write=False)
    return prepared, run_audit(prepared, cfg)


def test_motion_audit_finds_the_mislabeled_and_duplicated_recordings(motion_audit):
    prepared, report = motion_audit
    notes = prepared.dataset.notes
    checks = by_id(report)
    assert report["errors_failed"] == []
    flagged = set(checks["label_issues"]["detail"]["recordings"])
    assert set(notes["mislabeled"]) <= flagged and len(flagged) <= 2 * len(notes["mislabeled"])
    pairs = {tuple(p["recordings"]) for p in checks["within_split_duplicates"]["detail"]["recording_pairs"]}
    for dup in notes["duplicates"]:
        assert (dup.removesuffix(".dup"), dup) in pairs  # both copies named
    assert set(checks["outliers"]["detail"]["recordings"]) == set(notes["spikes"])
    assert checks["class_imbalance"]["passed"] is False  # idle outnumbers the gestures 3:1


def test_motion_split_optimism_shows_the_random_split_gap(motion_audit):
    _, report = motion_audit
    detail = by_id(report)["split_optimism"]["detail"]
    assert detail["gap"] > 0
    assert detail["random_window_split"] > detail["pipeline_split"]
    perm = by_id(report)["permutation_test"]
    assert perm["passed"] and abs(perm["detail"]["mean"] - 0.25) < 0.1


def test_motion_audit_is_deterministic(motion_audit):
    prepared, report = motion_audit
    assert to_json(run_audit(prepared, load_config())) == to_json(report)


# --------------------------------------------------------------------------- the stage and the CLI


def write_leaky_npz(path, seed=0):
    """An NPZ dataset (no groups, no recordings: a random split) with 40 rows uploaded twice.

    The random split separates many of the copies: cross_split_duplicates fails (an error).
    Reusable by any stage test that needs the audit to refuse.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(200) % 2
    X = rng.normal(size=(200, 16, 2)).astype(np.float32) + y[:, None, None]
    X = np.concatenate([X, X[:40]])
    y = np.concatenate([y, y[:40]])
    np.savez(path, X=X, y=y)
    return path


def test_audit_stage_writes_the_report_and_refuses_errors(tmp_path):
    data = write_leaky_npz(tmp_path / "leaky.npz")
    cfg = load_config(overrides={"data.dataset": str(data)})
    lines = []
    with pytest.raises(GateFailed) as exc:
        audit_stage(cfg, tmp_path / "run", out=lines.append)
    assert "cross_split_duplicates" in exc.value.message and "--allow-leakage" in exc.value.hint
    doc = json.loads((tmp_path / "run" / "audit.json").read_text())
    assert doc["passed"] is False and doc["allow_leakage"] is False and "override" not in doc
    assert "cross_split_duplicates" in doc["errors_failed"]
    assert (tmp_path / "run" / "splits.json").exists()
    text = "\n".join(lines)
    assert "FAIL error   cross_split_duplicates" in text and "train" in text

    prepared, doc = audit_stage(cfg, tmp_path / "run", allow_leakage=True, out=lines.append)
    assert prepared.reused
    assert doc["override"]["checks"] == doc["errors_failed"]
    assert json.loads((tmp_path / "run" / "audit.json").read_text())["override"]["checks"] == doc["errors_failed"]


def test_cli_audit_exit_codes(tmp_path, capsys):
    import tinyml_cli

    data = write_leaky_npz(tmp_path / "leaky.npz")
    run = tmp_path / "run"
    assert tinyml_cli.main(["audit", "--dataset", str(data), "--run", str(run)]) == 1
    err = capsys.readouterr().err
    assert "cross_split_duplicates" in err and "--allow-leakage" in err
    assert tinyml_cli.main(["audit", "--dataset", str(data), "--run", str(run), "--allow-leakage"]) == 0
    doc = json.loads((run / "audit.json").read_text())
    assert doc["allow_leakage"] is True and "cross_split_duplicates" in doc["override"]["checks"]
    # Clean data passes without an override.
    clean = tmp_path / "clean.npz"
    rng = np.random.default_rng(1)
    y = np.arange(200) % 2
    np.savez(clean, X=rng.normal(size=(200, 16, 2)) + y[:, None, None], y=y)
    assert tinyml_cli.main(["audit", "--dataset", str(clean), "--run", str(tmp_path / "run2")]) == 0
    assert "override" not in json.loads((tmp_path / "run2" / "audit.json").read_text())


def test_single_device_export_splits_by_recording_and_warns(tmp_path):
    """An Edge Impulse project from one device has no subject to hold out: the split falls
    back to recordings, and the audit warns what the test score then estimates."""
    from test_datasets import acquisition, write_export

    files = []
    for i in range(24):
        label = "abc"[i % 3]
        values = (np.random.default_rng(i).normal(size=(200, 3)) + i % 3).round(3).tolist()
        files.append(("testing" if i >= 18 else "training", label, f"{label}.{i}", acquisition(values, device="only-one"), "json"))
    write_export(tmp_path / "e", files)
    cfg = load_config(overrides={"data.dataset": str(tmp_path / "e")})
    prepared, report = audit_stage(cfg, tmp_path / "run", out=lambda *a: None)
    assert prepared.plan.group_by == "recording"
    assert any("one subject/device only" in n for n in prepared.plan.notes)
    overlap = next(c for c in report["checks"] if c["id"] == "group_overlap")
    assert overlap["severity"] == "warning" and not overlap["passed"]
    assert "one subject/device only" in overlap["message"]


def test_what_the_loader_skipped_is_printed(tmp_path):
    from test_datasets import ei_export

    root = ei_export(tmp_path)
    info = json.loads((root / "info.labels").read_text())
    info["files"].append({"path": "training/x.json", "name": "x", "category": "training", "label": {"type": "unlabeled"}})
    (root / "info.labels").write_text(json.dumps(info))
    printed = []
    cfg = load_config(overrides={"data.dataset": str(root), "split.window_ms": 500.0, "split.stride_ms": 250.0})
    audit_stage(cfg, tmp_path / "run", allow_leakage=True, out=printed.append)
    assert "data: skipped 1 (unlabeled)" in printed
