"""Splits: property tests over random datasets, the ESL 7.10.2 experiment, reuse of splits.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reach import must_reach

from pipeline.core.artifacts import to_json
from pipeline.core.config import SplitConfig, load_config
from pipeline.core.errors import PipelineError
from pipeline.data.dataset import Dataset
from pipeline.data.folds import GroupAwareKFold, cross_validate_pipeline
from pipeline.data.splits import (
    SPLITS,
    load_run_split,
    make_windows,
    manifest,
    plan_from_manifest,
    plan_split,
    prepare,
)

pytestmark = pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")

RATE = 10.0  # Hz: a 1 s window is 10 steps, a 0.5 s stride 5
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# Examples that must reach the assertions. Refused inputs are rejected (hypothesis.assume),
# so hypothesis draws others until 40 are valid; 30 leaves room for hypothesis stopping
# early, and none for a splitter that refuses most of what it is given.
REACHED = 30


# --------------------------------------------------------------------------- random datasets


@st.composite
def datasets(draw, windowed: bool, predefined: bool = False):
    """Random groups, recordings, lengths, classes and times.

    Time series: one sample per recording, windowed later. Windowed: rows already cut from
    recordings (rows of one recording share its id, consecutive in time), as an NPZ gives.
    """
    n_groups = draw(st.integers(3, 7))
    k = draw(st.integers(2, 3))
    has_groups = draw(st.booleans())
    has_recordings = windowed and draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    samples, labels, recs, groups, starts, categories = [], [], [], [], [], []
    n_rec = 0
    for g in range(n_groups):
        for _ in range(draw(st.integers(1, 4))):
            label = n_rec % k if n_rec < k else int(rng.integers(0, k))  # every class at least once
            start = float(rng.uniform(0, 500))
            category = "test" if predefined and rng.random() < 0.3 else "train"
            rec = f"g{g}.r{n_rec}"
            n_rec += 1
            if not windowed:
                samples.append(rng.normal(size=(int(rng.integers(6, 40)), 2)).astype(np.float32))
                labels.append(label), recs.append(rec), groups.append(f"g{g}"), starts.append(start)
                categories.append(category)
                continue
            rows = int(rng.integers(1, 5)) if has_recordings else 1
            for j in range(rows):
                samples.append(rng.normal(size=(4, 2)).astype(np.float32))
                labels.append(label), groups.append(f"g{g}"), categories.append(category)
                recs.append(rec if has_recordings else f"{rec}.{j}")
                starts.append(start + j * 4 / RATE)
    if predefined and "test" not in categories:
        categories[-1] = "test"
    n = len(samples)
    ids = [f"s{i:03d}" for i in range(n)] if windowed else recs
    return Dataset(
        name="random", source="hypothesis", kind="timeseries", samples=samples, labels=labels,
        label_names=tuple(f"c{c}" for c in range(k)), recording_ids=recs,
        group_ids=groups if has_groups else recs, start_times=starts, sample_ids=ids, rate_hz=RATE,
        channel_names=("a", "b"), windowed=windowed, has_groups=has_groups,
        has_recordings=has_recordings or not windowed,
        predefined_split=np.asarray(categories) if predefined else None,
    )


def _plan(dataset, strategy, seed=0, gap_s=0.0):
    cfg = SplitConfig(strategy=strategy, window_ms=1000.0, stride_ms=500.0, gap_s=gap_s)
    plan = plan_split(dataset, cfg, seed)
    return plan, make_windows(dataset, plan)


def _plan_or_reject(dataset, strategy, seed=0, gap_s=0.0):
    """Too little data for three splits is a PipelineError, which is the right outcome: the
    example is rejected (hypothesis draws another) and does not count towards ``REACHED``."""
    try:
        return _plan(dataset, strategy, seed, gap_s)
    except PipelineError as exc:
        assert exc.message and "\n" not in exc.message  # a one-line reason, never a crash
        assume(False)


def assert_leakage_safe(dataset, plan, windows):
    """The invariants every strategy keeps."""
    idx = plan.indices
    all_ids = set(dataset.sample_ids.tolist())
    # Every sample is in exactly one split, or excluded with a reason (time split gaps).
    seen = [i for s in SPLITS for i in idx[s].tolist()]
    assert len(seen) == len(set(seen))
    excluded = {sid for ids in plan.excluded.values() for sid in ids}
    assert set(dataset.sample_ids[seen].tolist()) | excluded == all_ids
    assert not set(dataset.sample_ids[seen].tolist()) & excluded
    # No recording in two splits, ever.
    rec = {s: set(dataset.recording_ids[idx[s]].tolist()) for s in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not rec[a] & rec[b], (a, b, rec[a] & rec[b])
    # No group in two splits, except by design: a time split keeps recordings whole, not
    # subjects; a predefined test split is the source's choice.
    if dataset.has_groups:
        grp = {s: set(dataset.group_ids[idx[s]].tolist()) for s in SPLITS}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            # ... or too few groups to give every split every class: split by recording, said in the notes.
            by_design = plan.strategy == "time" or (plan.predefined_test and b == "test") or plan.group_by != "group"
            if not by_design:
                assert not grp[a] & grp[b], (plan.strategy, a, b, grp[a] & grp[b])
    # No window straddles splits: each lies inside one sample of its own split.
    window_ids = []
    for s in SPLITS:
        w = windows[s]
        assert len(w) > 0
        assert np.isin(w.sample_index, idx[s]).all()
        lengths = dataset.lengths[w.sample_index]
        # A zero-padded window holds the end of its sample, then zeros.
        assert (w.offsets >= 0).all() and (w.offsets + w.length - w.padded <= lengths).all()
        assert ((w.padded == 0) | (w.offsets + w.length - w.padded == lengths)).all()
        assert (w.padded < w.length * 0.5 + 1).all()
        assert (w.recording_ids == dataset.recording_ids[w.sample_index]).all()
        window_ids.extend(w.window_ids.tolist())
    assert len(window_ids) == len(set(window_ids))
    # ... and no two windows of different splits share a time step of one recording.
    spans = {s: {} for s in SPLITS}
    for s in SPLITS:
        w = windows[s]
        for r, t in zip(w.recording_ids.tolist(), w.start_times.tolist(), strict=True):
            spans[s].setdefault(r, []).append((t, t + w.length / RATE))
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        for r in set(spans[a]) & set(spans[b]):
            for s0, e0 in spans[a][r]:
                for s1, e1 in spans[b][r]:
                    assert not (s0 < e1 and s1 < e0)


def assert_chronological(plan, windows, gap_s):
    for early, late in (("train", "val"), ("train", "test"), ("val", "test")):
        e, l_ = windows[early], windows[late]
        assert (e.start_times + e.length / RATE).max() + gap_s <= l_.start_times.min() + 1e-9


def assert_reproducible_and_round_trips(dataset, plan, windows, strategy, gap_s=0.0):
    again, _ = _plan(dataset, strategy, plan.seed, gap_s)
    for s in SPLITS:
        assert np.array_equal(again.indices[s], plan.indices[s])
    man = json.loads(to_json(manifest(dataset, plan, windows, {})))
    back = plan_from_manifest(dataset, man)
    for s in SPLITS:
        assert np.array_equal(back.indices[s], plan.indices[s])
    assert (back.strategy, back.group_by, back.seed, back.window_length, back.window_stride, back.predefined_test) == (
        plan.strategy, plan.group_by, plan.seed, plan.window_length, plan.window_stride, plan.predefined_test)
    assert back.excluded == plan.excluded and back.sizes == plan.sizes


# --------------------------------------------------------------------------- properties


@must_reach(REACHED)
@PROPERTY
@given(dataset=datasets(windowed=False), seed=st.integers(0, 50))
def test_group_split_of_recordings_is_leakage_safe(dataset, seed):
    plan, windows = _plan_or_reject(dataset, "group", seed)
    if plan.group_by == "recording" and dataset.has_groups:
        # Too few groups for every class in every split: the fallback says so.
        assert any("split by recording instead" in n or "one subject/device only" in n for n in plan.notes)
    else:
        assert plan.group_by == ("group" if dataset.has_groups else "recording")
    assert_leakage_safe(dataset, plan, windows)
    assert_reproducible_and_round_trips(dataset, plan, windows, "group")


@must_reach(REACHED)
@PROPERTY
@given(dataset=datasets(windowed=True), seed=st.integers(0, 50))
def test_group_split_of_windowed_rows_is_leakage_safe(dataset, seed):
    plan, windows = _plan_or_reject(dataset, "group", seed)
    assert_leakage_safe(dataset, plan, windows)
    assert_reproducible_and_round_trips(dataset, plan, windows, "group")


@must_reach(REACHED)
@PROPERTY
@given(dataset=datasets(windowed=False), gap_s=st.sampled_from([0.0, 2.0]))
def test_time_split_is_chronological_and_keeps_recordings_whole(dataset, gap_s):
    plan, windows = _plan_or_reject(dataset, "time", 0, gap_s)
    assert plan.group_by == "recording"
    assert_leakage_safe(dataset, plan, windows)
    assert_chronological(plan, windows, gap_s)
    assert_reproducible_and_round_trips(dataset, plan, windows, "time", gap_s)


@must_reach(REACHED)
@PROPERTY
@given(dataset=datasets(windowed=True), gap_s=st.sampled_from([0.0, 1.0]))
def test_time_split_of_windowed_rows_is_chronological(dataset, gap_s):
    plan, windows = _plan_or_reject(dataset, "time", 0, gap_s)
    assert_leakage_safe(dataset, plan, windows)
    assert_chronological(plan, windows, gap_s)


@must_reach(REACHED)
@PROPERTY
@given(dataset=datasets(windowed=True), seed=st.integers(0, 50))
def test_random_split_only_without_structure(dataset, seed):
    structured = dataset.has_groups or dataset.has_recordings
    if structured:
        with pytest.raises(PipelineError, match="random"):
            _plan(dataset, "random", seed)
        return
    plan, windows = _plan_or_reject(dataset, "random", seed)
    assert plan.group_by == "sample" and any("random split" in n for n in plan.notes)
    assert_leakage_safe(dataset, plan, windows)
    assert_reproducible_and_round_trips(dataset, plan, windows, "random")


@must_reach(REACHED)
@PROPERTY
@given(dataset=datasets(windowed=False, predefined=True), seed=st.integers(0, 50))
def test_predefined_test_split_is_kept(dataset, seed):
    plan, windows = _plan_or_reject(dataset, "group", seed)
    assert plan.predefined_test
    assert set(plan.indices["test"].tolist()) == set(np.flatnonzero(dataset.predefined_split == "test").tolist())
    assert_leakage_safe(dataset, plan, windows)
    assert_reproducible_and_round_trips(dataset, plan, windows, "group")


@must_reach(REACHED)
@PROPERTY
@given(n_groups=st.integers(2, 12), n=st.integers(12, 80), k=st.integers(2, 4),
       n_splits=st.integers(2, 6), seed=st.integers(0, 100))
def test_group_aware_kfold_keeps_groups_whole(n_groups, n, k, n_splits, seed):
    rng = np.random.default_rng(seed)
    groups = np.concatenate([np.arange(n_groups), rng.integers(0, n_groups, n - n_groups)]).astype(str)
    y = rng.integers(0, k, n)
    cv = GroupAwareKFold(n_splits, groups=groups, seed=seed)
    folds = list(cv.split(np.zeros((n, 1)), y))
    assert len(folds) == cv.get_n_splits() == min(n_splits, n_groups)
    held = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(held), np.arange(n))  # every sample held out exactly once
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    again = [te.tolist() for _, te in GroupAwareKFold(n_splits, groups=groups, seed=seed).split(np.zeros((n, 1)), y)]
    assert again == [te.tolist() for _, te in folds]


# --------------------------------------------------------------------------- ESL 7.10.2


def abs_correlation(X, y):
    """|Pearson correlation| of each feature with the label: the univariate screen of ESL 7.10.2."""
    Xc = X - X.mean(axis=0)
    yc = y - y.mean()
    denom = np.sqrt((Xc**2).sum(axis=0) * (yc**2).sum()) + 1e-12
    return np.abs(Xc.T @ yc) / denom


def _esl_errors(seed: int) -> tuple[float, float]:
    from sklearn.feature_selection import SelectKBest
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(50, 5000))  # pure noise: no feature says anything about y
    y = np.repeat([0, 1], 25)
    rng.shuffle(y)
    groups = np.arange(50)  # each sample its own group
    # Wrong: screen the features on all 50 samples, then cross-validate the classifier.
    top = np.argsort(-abs_correlation(X, y))[:100]
    before = cross_validate_pipeline(KNeighborsClassifier(1), X[:, top], y, groups, n_splits=5, seed=seed,
                                     scoring=("accuracy",))
    # Right: the screen is part of the model, refit inside each fold.
    model = Pipeline([("screen", SelectKBest(abs_correlation, k=100)), ("knn", KNeighborsClassifier(1))])
    inside = cross_validate_pipeline(model, X, y, groups, n_splits=5, seed=seed, scoring=("accuracy",))
    return 1 - before["test_accuracy"].mean(), 1 - inside["test_accuracy"].mean()


def test_esl_7_10_2_selection_must_happen_inside_the_folds():
    errors = np.array([_esl_errors(seed) for seed in range(6)])
    before, inside = errors.mean(axis=0)
    assert before < 0.10, f"selection before CV should look (wrongly) excellent, got error {before:.2f}"
    assert 0.35 <= inside <= 0.65, f"selection inside the folds should be at chance, got error {inside:.2f}"
    # The helper refits the whole pipeline per fold: training error of 1-NN is 0 either way.
    assert before < inside - 0.3


# --------------------------------------------------------------------------- splits.json reuse


def test_prepare_writes_then_reuses_the_split(tmp_path):
    cfg = load_config(overrides={"data.motion_subjects": 6, "data.motion_sessions": 1})
    first = prepare(cfg, tmp_path)
    assert (tmp_path / "splits.json").exists() and not first.reused
    second = prepare(cfg, tmp_path)
    assert second.reused
    for s in SPLITS:
        assert np.array_equal(first.windows[s].X, second.windows[s].X)
        assert first.manifest["splits"][s] == second.manifest["splits"][s]


def test_a_manifest_written_before_group_by_still_loads(tmp_path):
    """splits.json once named what the split keeps whole "unit"; such a run still reads back."""
    cfg = load_config(overrides={"data.motion_subjects": 6, "data.motion_sessions": 1})
    first = prepare(cfg, tmp_path)
    man = json.loads((tmp_path / "splits.json").read_text())
    assert man["group_by"] == first.plan.group_by and "unit" not in man
    man["unit"] = man.pop("group_by")
    (tmp_path / "splits.json").write_text(json.dumps(man))
    again = load_run_split(cfg, tmp_path)
    assert again.reused and again.plan.group_by == first.plan.group_by
    assert again.group_word == first.group_word == "subject"
    del man["unit"]
    (tmp_path / "splits.json").write_text(json.dumps(man))
    with pytest.raises(PipelineError, match="missing key 'group_by'"):
        load_run_split(cfg, tmp_path)


def test_prepare_makes_a_new_split_when_the_sizes_change(tmp_path):
    cfg = load_config(overrides={"data.motion_subjects": 6, "data.motion_sessions": 1})
    prepare(cfg, tmp_path)
    bigger = load_config(overrides={"data.motion_subjects": 6, "data.motion_sessions": 1, "split.test_size": 0.34})
    again = prepare(bigger, tmp_path)
    assert not again.reused and again.manifest["sizes"]["test_size"] == 0.34
    assert prepare(bigger, tmp_path).reused


def test_prepare_refuses_a_changed_test_split(tmp_path):
    cfg = load_config(overrides={"data.motion_subjects": 6, "data.motion_sessions": 1})
    first = prepare(cfg, tmp_path)
    ds = first.dataset
    test_idx = first.plan.indices["test"][0]
    ds.samples[test_idx] = ds.samples[test_idx] + 1.0  # the data changed under the run
    with pytest.raises(PipelineError, match="test split's content changed"):
        prepare(cfg, tmp_path, dataset=ds)
