"""[dsp] block = "auto": the candidates chosen from the data (no training here), the DSP's
cost measured on the emulated Cortex-M4, and an unresolved "auto" refused in one line."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.dsp import auto, blocks, cost
from tests.test_dsp import speech_like


def _dsp(**kw):
    return dataclasses.replace(load_config().dsp, **kw)


def test_default_block_is_auto():
    assert load_config().dsp.block == "auto"


def test_audio_candidates_are_raw_mfe_with_and_without_the_peak_gain_and_mfcc():
    X = np.stack([speech_like(2000, seed=s) for s in range(4)]).astype(np.float32)
    cands = auto.candidates(_dsp(), 8000.0, X)
    assert [(c["block"], c["dsp"].gain) for c in cands[1:]] == [("mfe", "peak"), ("mfe", "none"), ("mfcc", "peak")]
    assert cands[0]["block"] == "raw" and all(c["dsp"].noise_floor_db == -52.0 for c in cands[1:3])
    assert "-6 dBFS" in cands[1]["why"] and "as recorded" in cands[2]["why"]
    assert "noise floor -52 dB (Edge Impulse's)" in cands[1]["why"]
    # A floor the user set is the candidates' floor, said as it is.
    lower = auto.candidates(_dsp(noise_floor_db=-72.0), 8000.0, X)
    assert all(c["dsp"].noise_floor_db == -72.0 for c in lower[1:3])
    assert "noise floor -72 dB" in lower[1]["why"] and "Edge Impulse" not in lower[1]["why"]


def test_motion_candidates_are_raw_and_spectral_and_images_raw_only():
    X = np.random.default_rng(0).normal(size=(5, 256, 3)).astype(np.float32)
    cands = auto.candidates(_dsp(), 62.5, X)
    assert [(c["block"], c["dsp"].fft_length) for c in cands[1:]] == [("spectral", 16), ("spectral", 64)]
    short = auto.candidates(_dsp(), 62.5, X[:, :100])
    assert [c["block"] for c in short] == ["raw", "spectral"]  # 100 steps hold no four 64-point frames
    assert [c["block"] for c in auto.candidates(_dsp(), None, np.zeros((3, 8, 8, 1)))] == ["raw"]


def test_an_unresolved_auto_is_one_line():
    with pytest.raises(PipelineError, match='block = "auto" is chosen by the train stage'):
        blocks.features(np.zeros((1, 100, 1), np.float32), _dsp(), 8000.0)


def test_audio_features_are_images():
    F = blocks.features(speech_like(2000)[None], _dsp(block="mfcc"), 8000.0)
    assert F.ndim == 4 and F.shape[-1] == 1


def test_dsp_cost_measured_on_the_cortex_m4():
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
    short, long = (blocks.params(_dsp(), 8000.0, n, 1, "mfcc") for n in (2000, 8000))
    a, b = cost.measure([short, long])
    assert 0 < a["instructions"] < b["instructions"]  # four times the frames, more work
    assert a["ram_bytes"] == 4 * (a["scratch_floats"] + a["output_floats"] + 2000)


def test_report_draws_the_features_and_the_candidates():
    from pipeline.report import plots
    from pipeline.report.sections_dsp import _candidates

    rng = np.random.default_rng(0)
    png = plots.feature_images([(str(k), rng.random((20, 13))) for k in range(3)], "t", "coefficient")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    png = plots.feature_distributions({"train": rng.random((50, 13)), "val": rng.random((9, 13))}, "x", "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    auto_doc = {"candidates": [
        {"block": "raw", "parameters": {}, "val_score": 0.2, "status": "ok", "dsp_cost": {"instructions": 0,
         "ram_bytes": 0}, "device": {"macs": 10, "ram_bytes": 100}},
        {"block": "mfe", "parameters": {"noise_floor_db": -84.0}, "val_score": 0.5, "status": "ok",
         "dsp_cost": None, "device": {"macs": 20, "ram_bytes": 200}}]}
    table = _candidates(auto_doc)
    assert table.rows[1][0] == "mfe noise_floor_db -84" and table.rows[1][3] == "not measured"


@pytest.mark.slow
def test_auto_chooses_by_validation_with_raw_a_candidate(tmp_path):
    """The fast config with the default block: raw and spectral trained, the one chosen at
    least as good as raw on validation, recorded in the report and the run's config.toml."""
    import json

    from pipeline.core.config import load_config as load
    from tinyml_cli import FAST_CONFIG, main

    config = tmp_path / "auto.toml"
    config.write_text(FAST_CONFIG.read_text().replace('block = "raw"', 'block = "auto"'))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run", str(run)]) == 0
    report = json.loads((run / "train_report.json").read_text())
    auto_doc = report["dsp"]["auto"]
    scores = {c["block"]: c["val_score"] for c in auto_doc["candidates"] if c["status"] == "ok"}
    assert "raw" in scores and "spectral" in scores
    assert scores[auto_doc["chosen"]] >= scores["raw"]
    assert load(run / "config.toml").dsp.block == auto_doc["chosen"] == report["dsp"]["block"]
    assert all(c["dsp_cost"] is None or c["dsp_cost"]["instructions"] >= 0 for c in auto_doc["candidates"])
