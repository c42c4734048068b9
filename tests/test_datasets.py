"""Loaders: valid input loads with its structure; malformed input fails naming file and field."""

from __future__ import annotations

import json
import math

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import PipelineError
from pipeline.data.edge_impulse import parse_acquisition
from pipeline.data.load import load_dataset, load_digits, load_motion
from pipeline.data.windows import cut_windows, window_steps

# --------------------------------------------------------------------------- helpers


def acquisition(values, device="dev-1", interval=16.0, sensors=("accX", "accY", "accZ"), iat=1_700_000_000):
    return {
        "protected": {"ver": "v1", "alg": "none", "iat": iat},
        "signature": "0" * 64,
        "payload": {
            "device_name": device,
            "device_type": "NANO33BLE",
            "interval_ms": interval,
            "sensors": [{"name": s, "units": "m/s2"} for s in sensors],
            "values": values,
        },
    }


def write_export(root, files):
    """files: list of (category, label, name, doc, fmt)."""
    entries = []
    for category, label, name, doc, fmt in files:
        sub = root / category
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{name}.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps(doc))
        else:
            path.write_bytes(cbor2.dumps(doc))
        entry = {"path": f"{category}/{path.name}", "name": name, "category": category}
        entry["label"] = {"type": "label", "label": label} if label else {"type": "unlabeled"}
        entries.append(entry)
    (root / "info.labels").write_text(json.dumps({"version": 1, "files": entries}))
    return root


def rows(n, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c)).round(4).tolist()


def ei_export(tmp_path, fmt="json"):
    files = []
    for i, label in enumerate(["wave", "idle", "wave", "idle", "wave", "idle"]):
        cat = "testing" if i >= 4 else "training"
        files.append((cat, label, f"{label}.s{i}", acquisition(rows(80 + 10 * i, seed=i), device=f"dev-{i % 3}"), fmt))
    return write_export(tmp_path / "export", files)


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_dataset(tmp_path):
    lines = ["recording,label,t,ax,ay,group"]
    rng = np.random.default_rng(0)
    for r, label in enumerate(["a", "b", "a", "b"]):
        for k in range(50):
            lines.append(f"rec{r},{label},{k / 50:.4f},{rng.normal():.4f},{rng.normal():.4f},subj{r % 2}")
    return write_csv(tmp_path / "data.csv", lines)


# --------------------------------------------------------------------------- embedded


def test_motion_is_deterministic_and_has_its_defects():
    a, b = load_motion(seed=0), load_motion(seed=0)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a.samples, b.samples, strict=True))
    assert a.label_names == ("idle", "wave", "circle", "updown")
    assert a.rate_hz == 62.5 and a.channels == 3 and a.has_groups
    assert np.unique(a.group_ids).size == 12
    counts = a.class_counts()
    assert counts["idle"] >= 2.5 * counts["wave"]  # the imbalance is real
    lengths = a.lengths / a.rate_hz
    assert 8.9 <= lengths.min() and lengths.max() <= 11.1  # recordings of about 10 s
    dups = a.notes["duplicates"]
    assert len(dups) == 3
    for dup in dups:
        i = list(a.sample_ids).index(dup)
        j = list(a.sample_ids).index(dup.removesuffix(".dup"))
        assert np.array_equal(a.samples[i], a.samples[j])
    assert len(a.notes["mislabeled"]) == 3 and len(a.notes["spikes"]) == 4
    assert load_motion(seed=1).samples[0].shape != a.samples[0].shape or not np.array_equal(load_motion(seed=1).samples[0], a.samples[0])


def test_digits_are_real_images_without_groups():
    d = load_digits()
    assert d.kind == "image" and d.samples[0].shape == (8, 8, 1) and d.windowed
    assert len(d) == 1797 and d.num_classes == 10 and not d.has_groups


def test_windows_are_cut_after_the_fact_and_skip_is_counted():
    d = load_motion()
    length, stride = window_steps(d, 2000, 500)
    assert (length, stride) == (125, 31)
    skipped = {}
    w = cut_windows(d, np.arange(5), length, stride, skipped)
    assert w.X.shape[1:] == (125, 3)
    # every window lies inside the sample it names
    for k in range(len(w)):
        s = w.sample_index[k]
        assert w.offsets[k] + length <= d.samples[s].shape[0]
        assert np.array_equal(w.X[k], d.samples[s][w.offsets[k]:w.offsets[k] + length])
    skipped = {}
    cut_windows(d, np.arange(3), 10_000, 100, skipped)
    assert skipped == {"shorter than a window": 3}


# --------------------------------------------------------------------------- Edge Impulse


@pytest.mark.parametrize("fmt", ["json", "cbor"])
def test_edge_impulse_export_loads_with_predefined_test_split(tmp_path, fmt):
    d = load_dataset(str(ei_export(tmp_path, fmt)))
    assert d.label_names == ("idle", "wave")
    assert d.rate_hz == pytest.approx(62.5)
    assert list(d.predefined_split) == ["train"] * 4 + ["test"] * 2
    assert set(d.group_ids) == {"dev-0", "dev-1", "dev-2"} and d.has_groups
    assert [s.shape[0] for s in d.samples] == [80, 90, 100, 110, 120, 130]  # unequal lengths kept
    assert d.channel_names == ("accX", "accY", "accZ")


def test_edge_impulse_export_counts_what_it_skips(tmp_path):
    root = ei_export(tmp_path)
    info = json.loads((root / "info.labels").read_text())
    info["files"].append({"path": "training/x.json", "name": "x", "category": "training", "label": {"type": "unlabeled"}})
    (root / "info.labels").write_text(json.dumps(info))
    (root / "training" / "stray.zzz.json").write_text(json.dumps(acquisition(rows(50))))
    d = load_dataset(str(root))
    assert d.skipped == {"unlabeled": 1, "not listed in info.labels": 1}


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda doc: doc["payload"].pop("interval_ms"), "payload.interval_ms"),
        (lambda doc: doc["payload"].update(values=[[1, 2], [3, 4, 5]]), "payload.values[0]"),
        (lambda doc: doc["payload"].update(values=[[1, 2, "x"]]), "payload.values[0]"),
        (lambda doc: doc["payload"].update(sensors=[]), "payload.sensors"),
        (lambda doc: doc["payload"].update(values=[]), "payload.values"),
        (lambda doc: doc.pop("payload"), "'payload'"),
    ],
)
def test_malformed_acquisition_names_file_and_field(tmp_path, mutate, field):
    root = ei_export(tmp_path)
    target = root / "training" / "wave.s0.json"
    doc = json.loads(target.read_text())
    mutate(doc)
    target.write_text(json.dumps(doc))
    with pytest.raises(PipelineError) as err:
        load_dataset(str(root))
    assert "wave.s0.json" in str(err.value) and field in str(err.value)


def test_nan_in_acquisition_is_rejected(tmp_path):
    root = ei_export(tmp_path)
    target = root / "training" / "wave.s0.json"
    target.write_text(target.read_text().replace("[", "[NaN, ", 3).replace("[NaN, [NaN, ", "[[NaN, ", 1))
    with pytest.raises(PipelineError, match="wave.s0.json"):
        load_dataset(str(root))


def test_multi_label_and_unknown_label_types_are_errors(tmp_path):
    root = ei_export(tmp_path)
    info = json.loads((root / "info.labels").read_text())
    info["files"][0]["label"] = {"type": "multi-label", "labels": []}
    (root / "info.labels").write_text(json.dumps(info))
    with pytest.raises(PipelineError, match="multi-label"):
        load_dataset(str(root))
    info["files"][0]["label"] = {"type": "bounding-box"}
    (root / "info.labels").write_text(json.dumps(info))
    with pytest.raises(PipelineError, match="unknown label type 'bounding-box'"):
        load_dataset(str(root))


def test_one_class_only_is_rejected(tmp_path):
    files = [("training", "wave", f"wave.{i}", acquisition(rows(60, seed=i)), "json") for i in range(3)]
    with pytest.raises(PipelineError, match="one class only"):
        load_dataset(str(write_export(tmp_path / "e", files)))


def test_bare_acquisition_folder_labels_from_file_names(tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    for i, label in enumerate(["updown", "idle", "updown"]):
        (folder / f"{label}.{i:04x}.s{i}.json").write_text(json.dumps(acquisition(rows(70, seed=i), device=f"d{i}")))
    (folder / "notes.txt").write_text("hello")
    d = load_dataset(str(folder))
    assert d.label_names == ("idle", "updown")
    by_id = {sid: d.label_names[lab] for sid, lab in zip(d.sample_ids, d.labels, strict=True)}
    assert by_id == {"updown.0000.s0": "updown", "idle.0001.s1": "idle", "updown.0002.s2": "updown"}
    assert d.predefined_split is None and d.skipped == {"not .json or .cbor": 1}


def test_mixed_sampling_rates_are_resampled_to_one(tmp_path):
    files = [
        ("training", "a", "a.1", acquisition(rows(60), interval=16.0), "json"),
        ("training", "a", "a.2", acquisition(rows(60), interval=16.0), "json"),
        ("training", "b", "b.1", acquisition(rows(100), interval=10.0), "json"),
    ]
    d = load_dataset(str(write_export(tmp_path / "e", files)))
    assert d.rate_hz == 62.5 and [s.shape[0] for s in d.samples] == [60, 60, 63]  # 1 s at 100 Hz -> 62.5
    assert d.notes["resampled"]["from_hz"] == {"100": 1, "62.5": 2}
    assert d.originals[2].shape[0] == 100 and d.originals[0] is None


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.lists(finite, min_size=2, max_size=2), min_size=1, max_size=30),
    interval=st.floats(min_value=0.1, max_value=1000),
    use_cbor=st.booleans(),
)
def test_acquisition_parser_round_trips(values, interval, use_cbor):
    doc = acquisition(values, interval=interval, sensors=("a", "b"))
    data = cbor2.dumps(doc) if use_cbor else json.dumps(doc).encode()
    acq = parse_acquisition(data, "x.json")
    assert acq.values.shape == (len(values), 2)
    assert np.allclose(acq.values, np.asarray(values, dtype=np.float32), equal_nan=False)
    assert acq.interval_ms == pytest.approx(interval)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_acquisition_parser_never_crashes_on_garbage(data):
    try:
        parse_acquisition(data, "garbage.cbor")
    except PipelineError as exc:
        assert "garbage.cbor" in str(exc)


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | finite
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["protected", "signature", "payload", "x"]), json_values, max_size=4))
def test_acquisition_parser_rejects_wrong_structures_with_its_error(doc):
    try:
        acq = parse_acquisition(json.dumps(doc).encode(), "odd.json")
    except PipelineError as exc:
        assert str(exc).startswith("odd.json")
    else:
        assert acq.values.ndim == 2


# --------------------------------------------------------------------------- NPZ


def test_npz_time_series_with_groups_and_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 16, 2)).astype(np.float32)
    y = np.array(["a", "b"] * 10)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y, groups=np.repeat(["g1", "g2", "g3", "g4"], 5), recordings=np.repeat(np.arange(10), 2), times=np.arange(20.0))
    d = load_dataset(str(path))
    assert d.kind == "timeseries" and d.windowed and d.has_groups and d.has_recordings
    assert d.label_names == ("a", "b") and d.samples[0].shape == (16, 2)
    assert list(d.recording_ids[:4]) == ["0", "0", "1", "1"]


def test_npz_images_3d_need_kind(tmp_path):
    path = tmp_path / "img.npz"
    np.savez(path, X=np.zeros((6, 4, 4)), y=np.array([0, 1] * 3), kind="image")
    d = load_dataset(str(path))
    assert d.kind == "image" and d.samples[0].shape == (4, 4, 1)
    path4 = tmp_path / "img4.npz"
    np.savez(path4, X=np.zeros((6, 4, 4, 3)), y=np.array([0, 1] * 3), label_names=np.array(["cat", "dog"]))
    d = load_dataset(str(path4))
    assert d.kind == "image" and d.label_names == ("cat", "dog")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X": np.zeros((4, 3, 2))}, "missing array 'y'"),
        ({"X": np.zeros((4, 3)), "y": np.arange(4)}, "expected shape (n, T, C)"),
        ({"X": np.zeros((4, 3, 2)), "y": np.arange(5)}, "y: expected shape (4,)"),
        ({"X": np.full((4, 3, 2), np.nan), "y": np.array([0, 1, 0, 1])}, "NaN or infinite"),
        ({"X": np.zeros((4, 3, 2)), "y": np.array([0.5, 1, 0, 1])}, "expected integers or strings"),
        ({"X": np.zeros((4, 3, 2)), "y": np.zeros(4, dtype=int)}, "one class only"),
        ({"X": np.zeros((4, 3, 2)), "y": np.array([0, 1, 0, 1]), "groups": np.arange(3)}, "groups: expected shape (4,)"),
        ({"X": np.zeros((4, 3, 2)), "y": np.array([0, 1, 0, 1]), "extra": np.arange(3)}, "unknown arrays ['extra']"),
        ({"X": np.zeros((4, 3, 2)), "y": np.array([0, 3, 0, 1]), "label_names": np.array(["a", "b"])}, "do not index label_names"),
    ],
)
def test_npz_malformed(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(PipelineError) as err:
        load_dataset(str(path))
    assert "bad.npz" in str(err.value) and message in str(err.value)


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(PipelineError, match="broken.npz: not a readable .npz"):
        load_dataset(str(path))


# --------------------------------------------------------------------------- CSV


def test_csv_long_format(tmp_path):
    d = load_dataset(str(csv_dataset(tmp_path)))
    assert d.kind == "timeseries" and not d.windowed and d.has_groups
    assert d.rate_hz == pytest.approx(50.0) and d.channel_names == ("ax", "ay")
    assert [s.shape for s in d.samples] == [(50, 2)] * 4
    assert list(d.group_ids) == ["subj0", "subj1", "subj0", "subj1"]


def test_csv_rows_out_of_order_are_sorted_by_time(tmp_path):
    lines = ["recording,label,t,v", "r1,a,0.2,3", "r1,a,0.0,1", "r1,a,0.1,2", "r2,b,0,5", "r2,b,0.1,6"]
    d = load_dataset(str(write_csv(tmp_path / "o.csv", lines)))
    assert d.samples[0][:, 0].tolist() == [1, 2, 3] and not d.has_groups


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], "empty file"),
        (["recording,label,ax"], "missing column(s) ['t']"),
        (["recording,label,t"], "no channel columns"),
        (["recording,label,t,ax", "r1,a,0,1,2"], "line 2: expected 4 fields, got 5"),
        (["recording,label,t,ax", "r1,a,0,abc"], "line 2: column 'ax': expected a number, got 'abc'"),
        (["recording,label,t,ax", "r1,a,0,nan"], "line 2: column 'ax': NaN or infinite"),
        (["recording,label,t,ax", "r1,a,0,1", "r1,b,1,1"], "line 3: recording 'r1' has label 'b'"),
        (["recording,label,t,ax", "r1,,0,1"], "line 2: column 'label' is empty"),
        (["recording,label,t,ax", "r1,a,0,1", "r1,a,0,2", "r2,b,0,1", "r2,b,1,1"], "repeated time stamps"),
        (["recording,label,t,ax"], "no data rows"),
        (["recording,label,t,ax", "r1,a,0,1", "r1,a,1,1"], "one class only"),
    ],
)
def test_csv_malformed(tmp_path, lines, message):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(PipelineError) as err:
        load_dataset(str(path))
    assert "bad.csv" in str(err.value) and message in str(err.value)


@settings(max_examples=40, deadline=None)
@given(
    recs=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(min_value=2, max_value=20)),
        min_size=2, max_size=6,
    ),
    channels=st.integers(min_value=1, max_value=3),
)
def test_csv_parser_round_trips(tmp_path_factory, recs, channels):
    if len({lab for lab, _ in recs}) < 2:
        recs = recs + [("z", 3)]
    rng = np.random.default_rng(len(recs))
    header = "recording,label,t," + ",".join(f"c{k}" for k in range(channels))
    lines, expected = [header], []
    for r, (label, n) in enumerate(recs):
        vals = rng.normal(size=(n, channels)).astype(np.float32)
        expected.append(vals)
        for k in range(n):
            lines.append(f"rec{r},{label},{k * 0.02:.6f}," + ",".join(repr(float(v)) for v in vals[k]))
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text("\n".join(lines))
    d = load_dataset(str(path))
    assert len(d) == len(recs)
    for got, want in zip(d.samples, expected, strict=True):
        assert np.array_equal(got, want)
    assert math.isclose(d.rate_hz, 50.0, rel_tol=1e-6)


# --------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nothing", None, "no such file or folder"),
        ("empty.csv", b"", "empty file"),
        ("data.parquet", b"PAR1", "unknown dataset format '.parquet'"),
        ("one.json", b"{}", "a single acquisition file is not a dataset"),
    ],
)
def test_dispatch_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=message):
        load_dataset(str(path))


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no labelled acquisition files"):
        load_dataset(str(tmp_path / "empty"))
