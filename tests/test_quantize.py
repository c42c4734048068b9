"""The quantize stage on real models, real converters and the real TFLM kernels.

One small float model is trained once (on a synthetic, clearly learnable NPZ dataset with
subjects, through the real loader and splitter) and quantized several ways: as is, with
val/test windows poisoned, with a calibration set of zeros, against budgets it cannot
meet, and with layers TFLM cannot run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.artifacts import sha256_bytes, sha256_file
from pipeline.core.config import load_config
from pipeline.core.errors import GateFailed
from pipeline.core.ledger import read_ledger
from pipeline.data.splits import prepare
from pipeline.tflite.export import parse_model_data_cc, parse_model_settings_h
from pipeline.tflite.flatbuffer import TFLM_OPS, inspect_model
from pipeline.tflite.runtime import probe, round_up

pytestmark = pytest.mark.slow

FAST = Path(__file__).resolve().parents[1] / "pipeline" / "core" / "configs" / "fast.toml"
LABELS = ["idle", "wave", "circle", "updown"]


def write_dataset(path: Path, poison_rows: np.ndarray | None = None) -> Path:
    """12 subjects x 4 classes x 16 windows (64, 3): each class a sinusoid of its own
    frequency, with per-subject gain and noise. ``poison_rows`` are multiplied by 1000."""
    rng = np.random.default_rng(7)
    t = np.arange(64) / 32.0
    X, y, groups, recs = [], [], [], []
    for s in range(12):
        gain = rng.uniform(0.8, 1.2)
        for c in range(4):
            for i in range(16):
                w = rng.normal(0, 0.15, size=(64, 3))
                if c > 0:
                    w[:, c - 1] += gain * np.sin(2 * np.pi * (1.0 + 2.0 * c) * t + rng.uniform(0, 6.3))
                X.append(w)
                y.append(c)
                groups.append(f"s{s:02d}")
                recs.append(f"s{s:02d}-c{c}-r{i // 4}")
    X = np.asarray(X, dtype=np.float32)
    if poison_rows is not None:
        X[poison_rows] *= 1000.0
    np.savez(path, X=X, y=np.asarray(y), groups=np.asarray(groups), recordings=np.asarray(recs),
             label_names=np.asarray(LABELS))
    return path


def fast_cfg(dataset: Path, **quantize):
    overrides = {"data.dataset": str(dataset), **{f"quantize.{k}": v for k, v in quantize.items()}}
    return load_config(FAST, overrides)


def train_float(prepared, path: Path, epochs: int = 12):
    """A small convnet with a Normalization layer, like the train stage's, saved as float.keras."""
    import keras

    keras.utils.set_random_seed(0)
    tr = prepared.windows["train"]
    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(tr.X)
    inp = keras.Input(tr.X.shape[1:], name="window")
    z = keras.layers.Conv1D(8, 5, padding="same", activation="relu", name="conv1")(norm(inp))
    z = keras.layers.MaxPooling1D(2, name="pool1")(z)
    z = keras.layers.Conv1D(16, 5, padding="same", activation="relu", name="conv2")(z)
    z = keras.layers.GlobalAveragePooling1D(name="gap")(z)
    out = keras.layers.Dense(4, activation="softmax", name="head")(z)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(tr.X, tr.y, epochs=epochs, batch_size=32, verbose=0)
    model.save(path)
    return model


def fresh_run(base: Path, name: str, model_path: Path | None = None) -> Path:
    """A run directory with only what the train stage leaves: splits.json and float.keras."""
    run = base.parent / name
    run.mkdir()
    shutil.copy(base / "splits.json", run / "splits.json")
    shutil.copy(model_path or base / "float.keras", run / "float.keras")
    return run


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(cfg, run_dir, report, log lines) of a quantize run that should pass every gate."""
    from pipeline.quantize.stage import run as quantize

    root = tmp_path_factory.mktemp("quantize")
    cfg = fast_cfg(write_dataset(root / "clean.npz"))
    run = root / "run"
    prepared = prepare(cfg, run)
    train_float(prepared, run / "float.keras")
    lines: list[str] = []
    report = quantize(cfg, run, out=lines.append).report
    return cfg, run, report, lines


def test_quantize_passes_the_gates_and_writes_every_artifact(clean):
    cfg, run, report, lines = clean
    assert report["gates_passed"] and report["failures"] == []
    for name in ("int8.tflite", "quantize_report.json", "firmware/model_data.h",
                 "firmware/model_data.cc", "firmware/model_settings.h"):
        assert (run / name).is_file(), name
    assert not (run / "int8.rejected.tflite").exists()
    on_disk = json.loads((run / "quantize_report.json").read_text())
    assert on_disk["model_sha256"] == sha256_file(run / "int8.tflite") == report["model_sha256"]
    for name, sha in on_disk["firmware"]["files"].items():
        assert sha256_file(run / name) == sha
    conv = on_disk["conversion"]
    assert conv["per_channel"] is True and conv["seconds"] > 0
    assert conv["input"]["dtype"] == conv["output"]["dtype"] == "int8"
    # The terminal summary puts float, int8 and TFLM side by side, then the budget.
    text = "\n".join(lines)
    assert "float" in text and "int8 LiteRT" in text and "int8 TFLM" in text
    assert "tensor arena" in text and "MACs" in text and "estimated" in text


def test_validation_compares_float_int8_and_tflm(clean):
    _, _, report, _ = clean
    val = report["validation"]
    assert val["split"] == "val" and val["windows"] > 0
    for name in ("float", "int8", "tflm"):
        assert 0.9 <= val[name]["balanced_accuracy"] <= 1.0
    assert set(val["delta_int8_minus_float"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    d = val["delta_int8_minus_float"]["balanced_accuracy"]
    lo, hi = d["ci95"] or d["ci95_bootstrap"]  # None (and why) when every resample gives one value
    assert lo <= d["delta"] <= hi and (d["ci95"] or d["uncertainty"]["text"])
    assert 0.0 <= val["mcnemar_float_vs_int8"]["p_value"] <= 1.0
    assert set(val["per_class"]) == set(LABELS)
    err = val["output_error"]
    assert err["cosine_similarity"] > 0.99 and err["rmse"] < 0.05 and err["relative_l2"] < 0.1
    # TFLM runs LiteRT's reference arithmetic: the outputs are bit-identical.
    ref = val["litert_vs_tflm"]["reference_kernels"]
    assert ref == {"top1_agreement": 1.0, "bit_identical_share": 1.0, "max_lsb_difference": 0}
    assert val["litert_vs_tflm"]["default_kernels"]["gated"] is False
    assert all(g["passed"] for g in val["gates"].values())
    assert set(val["gates"]) == {"balanced_accuracy_drop", "float_int8_agreement", "litert_tflm_agreement"}
    drop = val["gates"]["balanced_accuracy_drop"]
    lo, hi = drop["ci95"] or (drop["value"], drop["value"])
    assert lo <= drop["value"] <= hi and (drop["ci95"] or drop["uncertainty"]["text"])
    # Per layer: the input, then one point per Keras layer of origin, each compared.
    layers = report["per_layer"]["layers"]
    assert [r["layer"] for r in layers][:1] == ["(input)"]
    assert {"conv1", "conv2", "head"} <= {r["layer"] for r in layers}
    for r in layers:
        assert r["litert_vs_tflm"] == {"max_lsb": 0, "differing_share": 0.0}
        if r.get("float_vs_int8"):
            assert r["float_vs_int8"]["cosine"] > 0.95


def test_test_split_is_scored_once_and_recorded_in_the_ledger(clean):
    _, run, report, _ = clean
    test = report["test"]
    assert test["split"] == "test" and test["n"] > 0 and test["ledger"]["look"] == 1
    entries = [e for e in read_ledger(run) if e["stage"] == "quantize"]
    assert len(entries) == 1
    assert entries[0]["model_sha256"] == report["model_sha256"]
    assert entries[0]["metrics"]["balanced_accuracy"] == test["balanced_accuracy"]


def test_firmware_files_hold_exactly_the_model_and_its_settings(clean):
    _, run, report, _ = clean
    data = (run / "int8.tflite").read_bytes()
    assert parse_model_data_cc((run / "firmware/model_data.cc").read_text()) == data
    s = parse_model_settings_h((run / "firmware/model_settings.h").read_text())
    conv = report["conversion"]
    assert s["labels"] == LABELS == report["labels"]
    assert s["input_shape"] == conv["input"]["shape"] == [1, 64, 3]
    assert s["input_size"] == 64 * 3
    assert np.float32(s["input_scale"]) == np.float32(conv["input"]["scale"])
    assert np.float32(s["output_scale"]) == np.float32(conv["output"]["scale"])
    assert (s["input_zero_point"], s["output_zero_point"]) == (conv["input"]["zero_point"], conv["output"]["zero_point"])
    assert s["arena_bytes"] == report["memory"]["arena_bytes_exported"]
    assert s["macs"] == report["macs"]["total"] > 0
    assert s["ops"] == report["tflm_ops"]["resolver"]
    assert s["sha256"] == sha256_bytes(data) and s["board"] == "nano33ble"
    assert s["sample_rate_hz"] == 0.0  # the NPZ gives no rate


def test_ops_macs_and_layers_of_origin(clean):
    _, run, report, _ = clean
    ops = report["ops"]
    assert {o["op"] for o in ops} <= set(TFLM_OPS)
    conv2d = [o for o in ops if o["op"] == "CONV_2D"]
    assert [o["layer"] for o in conv2d] == ["conv1", "conv2"]
    # conv1: 64 steps x 8 kernels x (5 x 3); conv2: 32 x 16 x (5 x 8); head: 4 x 16.
    assert [o["macs"] for o in conv2d] == [64 * 8 * 15, 32 * 16 * 40]
    by_layer = {row["layer"]: row["macs"] for row in report["macs"]["per_layer"]}
    assert by_layer["head"] == 64 and by_layer["normalize"] == 0
    assert report["macs"]["total"] == 64 * 8 * 15 + 32 * 16 * 40 + 64
    assert {o["layer"] for o in ops if o["op"] == "SOFTMAX"} == {"head"}
    est = report["latency_estimates"]
    assert est["nano33ble"]["configured"] and sum(e["configured"] for e in est.values()) == 1
    assert est["nano33ble"]["label"].startswith("predicted from measured op costs") and est["nano33ble"]["instructions"] > 0


def test_arena_min_is_a_true_minimum_above_the_recorded_total(clean):
    cfg, run, report, _ = clean
    mem = report["memory"]
    assert "64-bit host" in mem["note"]
    assert mem["arena_recorded_bytes"] < mem["arena_min_bytes"] <= mem["arena_bytes_exported"]
    assert mem["arena_bytes_exported"] == round_up(mem["arena_min_bytes"] * (1 + cfg.quantize.arena_margin))
    assert mem["arena_bytes_exported"] % 16 == 0
    model = run / "int8.tflite"
    assert probe(model, mem["arena_min_bytes"]).ok
    assert not probe(model, mem["arena_min_bytes"] - 16).ok
    fits = report["board"]["fits"]
    assert fits["ram"]["used_bytes"] == mem["arena_bytes_exported"] and fits["ram"]["passed"]
    assert fits["flash"]["used_bytes"] == mem["model_bytes"] == model.stat().st_size


def test_calibration_set_is_stratified_training_windows(tmp_path):
    from pipeline.quantize.calibration import calibration_set

    train = prepare(load_config(FAST), tmp_path, write=False).windows["train"]
    calib = calibration_set(train, 100, seed=0)
    channels = train.X.shape[-1]
    assert 100 <= len(calib) <= 100 + 2 * 4 * channels
    assert set(calib.window_ids) <= set(train.window_ids)
    share = np.bincount(calib.y, minlength=4) / len(calib)
    expected = np.bincount(train.y, minlength=4) / len(train)
    assert np.all(np.abs(share - expected) <= 0.05)
    # Each class keeps its extremes of each channel: the subset spans what the full set spans.
    for c in range(4):
        mine, all_c = calib.X[calib.y == c], train.X[train.y == c]
        assert np.array_equal(mine.max(axis=(0, 1)), all_c.max(axis=(0, 1)))
        assert np.array_equal(mine.min(axis=(0, 1)), all_c.min(axis=(0, 1)))
    assert len(calibration_set(train, 0, seed=0)) == len(train)
    assert np.array_equal(calibration_set(train, 100, seed=0).window_ids, calib.window_ids)
    assert len(calibration_set(train, 10**6, seed=0)) == len(train)


def test_spiky_training_windows_are_left_out_of_calibration(tmp_path):
    from dataclasses import replace

    from pipeline.quantize.calibration import drop_outliers

    train = prepare(load_config(FAST), tmp_path, write=False).windows["train"]
    x = train.X.copy()
    x[[3, 50], 10, 0] = 500.0  # two spikes
    spiky = replace(train, X=x)
    kept = drop_outliers(spiky, 8.0)
    assert not {train.window_ids[3], train.window_ids[50]} & set(kept.window_ids)
    assert set(kept.window_ids) <= set(train.window_ids) and len(kept) > 0.95 * len(train)
    assert np.abs(kept.X).max() < 100
    assert len(drop_outliers(spiky, 0.0)) == len(train)


def test_calibration_never_reads_validation_or_test_windows(clean, tmp_path):
    """Poison every val and test window (x1000): the int8 model must not change at all."""
    from pipeline.quantize.stage import run as quantize

    cfg, run, report, _ = clean
    man = json.loads((run / "splits.json").read_text())
    held_out = [int(sid[3:]) for name in ("val", "test") for sid in man["splits"][name]]
    pcfg = fast_cfg(write_dataset(tmp_path / "poisoned.npz", poison_rows=np.asarray(held_out)))
    prun = tmp_path / "run"
    prepared = prepare(pcfg, prun)
    assert {k: prepared.manifest["splits"][k] for k in ("train", "val", "test")} == \
        {k: man["splits"][k] for k in ("train", "val", "test")}
    assert np.abs(prepared.windows["val"].X).max() > 500  # the poison is really there
    shutil.copy(run / "float.keras", prun / "float.keras")
    try:
        poisoned = quantize(pcfg, prun, out=lambda _: None).report
    except GateFailed:  # the poisoned val windows may well fail a gate; the model is what counts
        poisoned = json.loads((prun / "quantize_report.json").read_text())
    assert poisoned["calibration"] == report["calibration"]
    assert poisoned["conversion"]["input"] == report["conversion"]["input"]
    assert poisoned["model_sha256"] == report["model_sha256"]


def test_a_zero_calibration_set_fails_a_gate_naming_the_worst_classes(clean):
    from pipeline.quantize.stage import check_and_export, load_inputs
    from pipeline.tflite.convert import convert_int8

    cfg, run, report, _ = clean
    zrun = fresh_run(run, "zero-calibration")
    inputs = load_inputs(cfg, zrun)
    zeros = np.zeros((50, *inputs.windows["train"].X.shape[1:]), np.float32)
    data, seconds = convert_int8(inputs.model, zeros)
    calibration = {**report["calibration"], "note": "all zeros (a broken representative dataset)"}
    with pytest.raises(GateFailed) as err:
        check_and_export(cfg, zrun, inputs, calibration, data, seconds, out=lambda _: None)
    assert err.value.exit_code == 1
    assert "worst classes:" in err.value.message and "float_int8_agreement" in err.value.message
    assert any(name in err.value.message.split("worst classes:")[1] for name in LABELS)
    on_disk = json.loads((zrun / "quantize_report.json").read_text())
    assert on_disk["gates_passed"] is False and on_disk["failures"]
    assert not on_disk["validation"]["gates"]["float_int8_agreement"]["passed"]
    assert (zrun / "int8.rejected.tflite").is_file()
    assert not (zrun / "int8.tflite").exists() and not (zrun / "firmware" / "model_data.cc").exists()
    assert not [e for e in read_ledger(zrun)]  # a rejected model never looks at the test split


def test_accept_drop_exports_and_says_so_first(clean):
    """The zero-calibrated model misses an accuracy gate; with accept_drop it is exported,
    and the override is the first thing in quantize_report.json and the report page."""
    from pipeline.quantize.stage import check_and_export, load_inputs
    from pipeline.report.document import build_report
    from pipeline.tflite.convert import convert_int8

    cfg, run, report, _ = clean
    arun = fresh_run(run, "accept-drop")
    acfg = fast_cfg(Path(cfg.data.dataset), accept_drop=True)
    inputs = load_inputs(acfg, arun)
    zeros = np.zeros((50, *inputs.windows["train"].X.shape[1:]), np.float32)
    data, seconds = convert_int8(inputs.model, zeros)
    lines: list[str] = []
    got = check_and_export(acfg, arun, inputs, report["calibration"], data, seconds, out=lines.append)
    on_disk = json.loads((arun / "quantize_report.json").read_text())
    assert next(iter(on_disk)) == "override" and on_disk["gates_passed"] is False
    assert "float_int8_agreement" in on_disk["override"]["failed_gates"]
    assert on_disk["model_sha256"] == sha256_file(arun / "int8.tflite") == got["model_sha256"]
    assert lines[0].startswith("quantize: OVERRIDE")
    build_report(arun, out=lambda _: None)
    md = (arun / "report.md").read_text()
    assert "OVERRIDE --accept-drop" in md  # the at-a-glance table at the top of the page
    assert "OVERRIDE (--accept-drop)" in md and "OVERRIDE:" in md  # quantization section, info sheet


def test_a_layer_with_a_huge_activation_range_is_named(clean):
    """A 1x1 conv that multiplies one channel by 1e5 (and one that divides it back): the
    float model is unchanged, but the int8 tensor between them has one scale for all
    channels, so the others drop below 1 LSB. The error names that layer."""
    import keras

    cfg, run, report, _ = clean
    base = keras.models.load_model(run / "float.keras")
    width = base.get_layer("conv1").filters
    up = np.eye(width, dtype=np.float32)
    up[0, 0] = 1e5
    x = base.get_layer("pool1").output
    x = keras.layers.Conv1D(width, 1, name="blowup")(x)
    x = keras.layers.Conv1D(width, 1, name="shrink")(x)
    z = x
    for name in ("conv2", "gap", "head"):
        z = base.get_layer(name)(z)
    model = keras.Model(base.inputs, z)
    model.get_layer("blowup").set_weights([up[None], np.zeros(width, np.float32)])
    model.get_layer("shrink").set_weights([np.linalg.inv(up)[None], np.zeros(width, np.float32)])
    path = run.parent / "blowup.keras"
    model.save(path)
    brun = fresh_run(run, "blowup", path)
    from pipeline.quantize.stage import run as quantize

    with pytest.raises(GateFailed) as err:
        quantize(fast_cfg(Path(cfg.data.dataset), input_handling="graph"), brun, out=lambda _: None)
    assert "int8 loses it at blowup" in err.value.message
    on_disk = json.loads((brun / "quantize_report.json").read_text())
    assert on_disk["per_layer"]["jump"]["layer"] == "blowup"
    assert not (brun / "int8.tflite").exists() and (brun / "int8.rejected.tflite").exists()


def test_a_ram_budget_the_arena_does_not_fit_fails(clean):
    from pipeline.quantize.stage import run as quantize

    cfg, run, report, _ = clean
    brun = fresh_run(run, "tight-ram")
    with pytest.raises(GateFailed) as err:
        quantize(fast_cfg(Path(cfg.data.dataset), ram_budget_bytes=2048), brun, out=lambda _: None)
    arena = report["memory"]["arena_bytes_exported"]
    assert f"ram: {arena:,} B" in err.value.message and "budget of 2,048 B" in err.value.message
    assert json.loads((brun / "quantize_report.json").read_text())["board"]["fits"]["ram"]["passed"] is False


def test_a_model_too_big_for_the_nicla_sense_me_flash_fails(clean, tmp_path):
    import keras

    from pipeline.quantize.stage import run as quantize

    cfg, run, _, _ = clean
    prepared = prepare(cfg, run, write=False)
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(prepared.windows["train"].X)
    inp = keras.Input((64, 3))
    z = keras.layers.Flatten(name="flat")(norm(inp))
    z = keras.layers.Dense(2048, activation="relu", name="wide")(z)  # 393k int8 weights
    out = keras.layers.Dense(4, activation="softmax", name="head")(z)
    keras.Model(inp, out).save(tmp_path / "big.keras")
    brun = fresh_run(run, "too-big", tmp_path / "big.keras")
    ncfg = fast_cfg(Path(cfg.data.dataset), board="nicla_sense_me")
    with pytest.raises(GateFailed) as err:
        quantize(ncfg, brun, out=lambda _: None)
    rep = json.loads((brun / "quantize_report.json").read_text())
    flash = rep["board"]["fits"]["flash"]
    assert not flash["passed"] and flash["used_bytes"] > flash["budget_bytes"] == int(512 * 1024 * 0.6)
    assert f"flash: {flash['used_bytes']:,} B" in err.value.message and "nicla_sense_me" in err.value.message


def test_an_op_tflm_cannot_run_is_named_with_its_layer(clean, tmp_path):
    import keras

    from pipeline.quantize.stage import run as quantize

    cfg, run, _, _ = clean
    inp = keras.Input((64, 3))
    z = keras.layers.Conv1D(4, 3, name="conv1")(inp)
    z = keras.layers.GlobalAveragePooling1D(name="gap")(z)
    z = keras.layers.Dense(8, activation="gelu", name="mixer")(z)
    out = keras.layers.Dense(4, activation="softmax", name="head")(z)
    keras.Model(inp, out).save(tmp_path / "gelu.keras")
    grun = fresh_run(run, "gelu", tmp_path / "gelu.keras")
    with pytest.raises(GateFailed) as err:
        quantize(cfg, grun, out=lambda _: None)
    assert "GELU from layer 'mixer' (Dense)" in err.value.message
    rep = json.loads((grun / "quantize_report.json").read_text())
    assert rep["tflm_ops"] == {**rep["tflm_ops"], "supported": False, "unsupported": ["GELU"]}
    assert not (grun / "int8.tflite").exists()


def test_a_layer_with_no_int8_builtin_is_named(clean, tmp_path):
    import keras

    from pipeline.quantize.stage import run as quantize

    cfg, run, _, _ = clean
    inp = keras.Input((64, 3))
    z = keras.layers.LSTM(4, name="recurrent")(inp)
    out = keras.layers.Dense(4, activation="softmax", name="head")(z)
    keras.Model(inp, out).save(tmp_path / "lstm.keras")
    lrun = fresh_run(run, "lstm", tmp_path / "lstm.keras")
    with pytest.raises(GateFailed, match=r"from layer 'recurrent' \(LSTM\)") as err:
        quantize(cfg, lrun, out=lambda _: None)
    assert "TensorList" in err.value.message


def test_per_tensor_weights_on_request(clean):
    from pipeline.quantize.calibration import calibration_set
    from pipeline.quantize.stage import load_inputs
    from pipeline.tflite.convert import convert_int8

    cfg, run, _, _ = clean
    inputs = load_inputs(cfg, run)
    calib = calibration_set(inputs.windows["train"], 50, 0)

    def max_scales(data):
        return max(len(t.scales) for t in inspect_model(data).tensors)

    assert max_scales(convert_int8(inputs.model, calib.X, per_channel=False)[0]) == 1
    assert max_scales(convert_int8(inputs.model, calib.X, per_channel=True)[0]) > 1


def test_op_table_names_real_builtins_and_resolver_methods():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    for op, method in TFLM_OPS.items():
        assert isinstance(getattr(schema.BuiltinOperator, op), int), op
        assert method.startswith("Add") and method[3:].isidentifier(), method
    assert "GELU" not in TFLM_OPS and TFLM_OPS["CONV_2D"] == "AddConv2D"


def test_layer_of_reads_fused_tensor_names():
    from pipeline.tflite.flatbuffer import layer_of

    layers = ["normalize", "conv1", "relu1", "classes"]
    fused = "convnet_1/relu1_1/Relu;convnet_1/conv1_1/BiasAdd;convnet_1/conv1_1/convolution"
    assert layer_of(fused, layers) == "conv1"
    assert layer_of("convnet_1/normalize_1/Sub", layers) == "normalize"
    assert layer_of("StatefulPartitionedCall_1:0", layers) is None
    assert layer_of("arith.constant", layers) is None


def test_train_then_quantize_through_the_cli(fast_run):
    """`tinyml train --fast` then `tinyml quantize --fast` on the embedded motion dataset
    (the shared run of conftest): quantize reads what train wrote, scores the very float
    model train scored, passes its gates, and exports exactly int8.tflite."""
    run = fast_run
    report = json.loads((run / "quantize_report.json").read_text())
    train_report = json.loads((run / "train_report.json").read_text())
    assert report["validation"]["float"]["balanced_accuracy"] == \
        pytest.approx(train_report["metrics"]["val"]["balanced_accuracy"], abs=1e-9)
    assert report["calibration"]["split"] == "train"
    assert report["calibration"]["windows"] == report["calibration"]["training_windows"]
    assert report["gates_passed"] is True
    data = (run / "int8.tflite").read_bytes()
    assert parse_model_data_cc((run / "firmware" / "model_data.cc").read_text()) == data
    assert parse_model_settings_h((run / "firmware" / "model_settings.h").read_text())["sha256"] == sha256_bytes(data)


def test_host_interpreter_falls_back_to_tf_lite(tiny_int8, monkeypatch):
    """Without ai_edge_litert (and tflite_runtime), tf.lite runs the same int8 model, with
    the same reference-kernel outputs."""
    import sys

    from pipeline.tflite.litert import host_interpreter, run_litert

    path, data, _ = tiny_int8
    x_q = np.random.default_rng(0).integers(-128, 128, size=(8, 32, 3)).astype(np.int8)
    assert host_interpreter()[2] == "ai_edge_litert"
    litert = run_litert(data, x_q, reference=True)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    assert host_interpreter()[2] == "tf.lite"
    assert np.array_equal(run_litert(data, x_q, reference=True), litert)
