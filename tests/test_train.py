"""The train stage end to end (fast config): artifacts, report, test ledger, and the sanity
gates catching a broken model or labels shuffled against inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import GateFailed

pytestmark = pytest.mark.slow

FAST = Path(__file__).resolve().parents[1] / "pipeline" / "core" / "configs" / "fast.toml"
BASELINES = {"prior", "most_frequent", "zero_input_convnet", "linear"}
REPORT_KEYS = {"status", "dataset", "split", "audit", "baselines", "sanity", "search", "history",
               "metrics", "model", "labels", "timing", "config"}


@pytest.fixture(scope="module")
def trained(fast_run):
    """The shared fast run (conftest): rc, run directory and what `tinyml train` printed."""
    from conftest import FAST_RUN_OUTPUT

    return 0, fast_run, FAST_RUN_OUTPUT["train"]


def test_cli_train_writes_the_model_report_config_and_one_test_look(trained):
    from pipeline.core.artifacts import sha256_file
    from pipeline.core.ledger import read_ledger

    rc, run, stdout = trained
    assert rc == 0, stdout
    for name in ("float.keras", "train_report.json", "config.toml", "splits.json", "audit.json"):
        assert (run / name).is_file(), name
    report = json.loads((run / "train_report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["status"] == "passed"
    assert report["model"]["sha256"] == sha256_file(run / "float.keras")
    assert report["model"]["input_shape"] == [64, 3]
    assert report["labels"] == report["model"]["labels"] == ["idle", "wave", "circle", "updown"]
    assert report["audit"]["allow_leakage"] is False and report["audit"]["errors_failed"] == []
    assert report["split"]["group_by"] == "group"
    assert load_config(run / "config.toml").train.trials == load_config(FAST).train.trials
    looks = [e for e in read_ledger(run) if e["stage"] == "train"]
    assert len(looks) == 1
    assert looks[0]["stage"] == "train" and looks[0]["model_sha256"] == report["model"]["sha256"]
    assert looks[0]["metrics"]["balanced_accuracy"] == report["metrics"]["test"]["balanced_accuracy"]
    assert "baseline.prior.balanced_accuracy" in looks[0]["metrics"]
    # The terminal summary: baselines and the convnet side by side, and the verdicts.
    for word in ("balanced accuracy", "macro f1", "prior", "linear", "convnet", "sanity:",
                 "beats every baseline on validation: yes"):
        assert word in stdout


def test_report_holds_baselines_sanity_search_history_and_metrics_per_split(trained):
    _, run, _ = trained
    report = json.loads((run / "train_report.json").read_text())
    cfg = load_config(FAST)
    assert set(report["baselines"]) == BASELINES
    for b in report["baselines"].values():
        for split in ("train", "val", "test"):
            assert set(b[split]["ci95"]) >= {"balanced_accuracy", "macro_f1", "mcc", "accuracy"}
    cv = report["baselines"]["linear"]["cv"]
    assert len(cv["train_scores"]) == len(cv["val_scores"]) == cv["folds"] >= 2
    s = report["sanity"]
    assert s["seed"] == 0 and s["init_loss_ok"] and s["overfit_ok"]
    assert abs(s["init_loss"] - s["expected_init_loss"]) <= cfg.train.init_loss_tolerance
    assert s["overfit_batch_loss"] < cfg.train.search_space.overfit_max_loss
    assert s["reproducible"] is True
    assert s["reproducibility"]["first"] == s["reproducibility"]["second"]
    # The refit (this process) repeated the chosen trial's (a Ray worker's) epochs to the bit.
    assert "the refit (this process)" in s["reproducibility"]["compared"]
    # Every epoch's training loss, and (the same epochs under cosine) the final validation loss.
    assert len(s["reproducibility"]["first"]["loss"]) == report["refit"]["epochs"] >= 1
    assert s["reproducibility"]["first"]["val_loss"] == report["refit"]["val_loss"]
    assert set(s["beats_baselines"]) == BASELINES
    assert all(s["beats_baselines"][b] for b in ("prior", "most_frequent", "zero_input_convnet"))
    trials = report["search"]["trials"]
    assert len(trials) == cfg.train.trials and report["search"]["best"] in trials
    # The fast config's work (about 67 s on one core) repays Ray's start-up on 2 cores: the
    # search ran on the embedded Ray, said why, costed every trial and drew its fronts.
    assert report["search"]["engine"] == "ray" and report["search"]["address"] == "local"
    assert "against Ray's start-up" in report["search"]["engine_choice"]
    assert report["search"]["pareto"]["ram"] and report["search"]["pareto"]["latency"]
    assert len(report["refit_seeds"]["runs"]) == cfg.train.seeds
    for t in trials:
        assert t["status"] == "ok" and t["device"]["ram_bytes"] > 0 and t["device"]["latency_ms"] > 0
        assert {"params", "train_score", "val_score", "epochs"} <= set(t)
        assert {"learning_rate", "width", "depth", "kernel_size", "dropout", "l2"} <= set(t["params"])
    h = report["history"]
    assert len(h["loss"]) == len(h["val_loss"]) == len(h["accuracy"]) == len(h["val_accuracy"])
    assert len(h["loss"]) == h["epochs_run"] == report["refit"]["epochs"] >= h["best_epoch"] >= 1
    for split in ("train", "val", "test"):
        m = report["metrics"][split]
        assert m["n"] == report["split"]["windows"][split]
        assert m["groups"] == report["split"]["groups"][split]
        if m["uncertainty"]["kind"] == "bootstrap":
            lo, hi = m["ci95"]["balanced_accuracy"]
            assert lo <= m["balanced_accuracy"] <= hi
        else:  # fewer than 5 subjects (the test split holds 2), or no error: no interval, said why
            assert m["ci95"]["balanced_accuracy"] is None and m["uncertainty"]["text"]["balanced_accuracy"]
        assert set(m["per_class"]) == set(report["labels"]) and len(m["confusion"]) == 4
    assert report["metrics"]["val"]["balanced_accuracy"] > 0.25


def test_saved_model_is_the_scored_one_and_normalizes_with_training_statistics_only(trained):
    """The model in float.keras reproduces the reported test score from raw windows, and its
    normalization statistics are the training windows', not those of validation or test."""
    import keras

    from pipeline.data.splits import load_split_windows
    from pipeline.ml.metrics import scores
    from pipeline.ml.model import normalization_stats

    _, run, _ = trained
    report = json.loads((run / "train_report.json").read_text())
    cfg = load_config(run / "config.toml")
    model = keras.models.load_model(run / "float.keras")
    test = load_split_windows(cfg, run, "test")
    proba = model.predict(test.X, verbose=0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert scores(test.y, proba.argmax(1), 4)["balanced_accuracy"] == pytest.approx(
        report["metrics"]["test"]["balanced_accuracy"])
    stats = normalization_stats(model)
    train = load_split_windows(cfg, run, "train").X
    np.testing.assert_allclose(stats["mean"], train.mean(axis=(0, 1)), rtol=1e-4)
    np.testing.assert_allclose(stats["variance"], train.var(axis=(0, 1)), rtol=1e-3)
    for other in ("val", "test"):
        X = load_split_windows(cfg, run, other).X
        assert not np.allclose(X.mean(axis=(0, 1)), train.mean(axis=(0, 1)), rtol=1e-3)


def test_digits_train_a_2d_convnet(tmp_path, capsys):
    import tinyml_cli

    run = tmp_path / "run"
    assert tinyml_cli.main(["train", "--dataset", "digits", "--fast", "--run", str(run)]) == 0
    report = json.loads((run / "train_report.json").read_text())
    assert report["model"]["input_shape"] == [8, 8, 1]
    assert "Conv2D" in {layer["type"] for layer in report["model"]["layers"]}
    assert report["split"]["group_by"] == "sample"
    assert report["metrics"]["val"]["balanced_accuracy"] > 0.5


# --------------------------------------------------------------------------- broken on purpose


def motion_npz(path: Path, shuffle: bool, seed: int = 0) -> Path:
    """Motion windows as an NPZ with recording ids (so validation has many clusters), the
    labels either true or shuffled across recordings (independent of the inputs)."""
    from pipeline.data import motion

    raw = motion.generate(seed=0, subjects=6, sessions=2)
    labels = np.asarray(raw["labels"])
    if shuffle:
        labels = np.random.default_rng(seed).permutation(labels)
    X, y, rec = [], [], []
    for r, lab, rid in zip(raw["recordings"], labels, raw["recording_ids"], strict=True):
        if rid in raw["notes"]["duplicates"]:
            continue  # a re-upload would sit in two splits: the audit rightly refuses that
        for s in range(0, len(r) - 64 + 1, 64):
            X.append(r[s:s + 64])
            y.append(lab)
            rec.append(rid)
    np.savez(path, X=np.asarray(X, np.float32), y=np.asarray(y), recordings=np.asarray(rec),
             label_names=np.asarray(motion.LABELS), rate_hz=np.asarray(motion.RATE_HZ))
    return path


def train(cfg, run, out):
    """The audit stage, then the train stage on what it hands over (as the CLI runs them)."""
    from pipeline.audit import stage as audit
    from pipeline.train import stage as train_stage

    audited = audit.run(cfg, run, out=out)
    return train_stage.run(cfg, run, out=out, prepared=audited.reuse["prepared"],
                           audit_report=audited.report).report


def test_train_without_an_audit_of_its_split_stops_before_training(tmp_path):
    """Called without the audit's report, the stage reads audit.json: there must be one, of
    this split, and a failed error check in it stops the stage as the audit would."""
    from pipeline.core.artifacts import write_json
    from pipeline.core.errors import PipelineError
    from pipeline.data.splits import prepare
    from pipeline.train.stage import run as train_run

    cfg, run = load_config(FAST), tmp_path / "run"
    with pytest.raises(PipelineError, match="audit.json: not found"):
        train_run(cfg, run, out=lambda _: None)
    test_sha = prepare(cfg, run).manifest["test_sha256"]
    write_json(run / "audit.json", {"split": {"test_sha256": "0" * 64}, "errors_failed": []})
    with pytest.raises(PipelineError, match="audit.json: not of this split"):
        train_run(cfg, run, out=lambda _: None)
    write_json(run / "audit.json", {"split": {"test_sha256": test_sha}, "errors_failed": ["group_overlap"]})
    with pytest.raises(GateFailed, match="group_overlap"):
        train_run(cfg, run, out=lambda _: None)
    assert not (run / "train_report.json").exists() and not (run / "float.keras").exists()


@pytest.mark.parametrize("shuffle", [False, True], ids=["labels-aligned", "labels-shuffled"])
def test_labels_shuffled_against_inputs_fail_the_beats_baselines_gate(tmp_path, shuffle):
    """Overfitting one batch works with shuffled labels too (memorization); what catches them
    is that the model cannot beat the input-independent baselines on validation. The same
    data with aligned labels passes the same gate: the test can fail both ways."""
    cfg = load_config(FAST, {"data.dataset": str(motion_npz(tmp_path / "motion.npz", shuffle))})
    run = tmp_path / "run"
    lines: list[str] = []
    if not shuffle:
        report = train(cfg, run, out=lines.append)
        assert all(report["sanity"]["beats_baselines"][b] for b in ("prior", "most_frequent", "zero_input_convnet"))
        assert report["split"]["groups"]["val"] >= 10
        return
    with pytest.raises(GateFailed, match="does not beat the input-independent baseline"):
        train(cfg, run, out=lines.append)
    report = json.loads((run / "train_report.json").read_text())
    assert report["status"] == "failed" and "does not beat" in report["failure"]
    assert report["sanity"]["overfit_ok"] is True  # one batch is memorized all the same
    assert not report["sanity"]["beats_baselines"]["prior"]
    assert not (run / "float.keras").exists()
    assert not (run / "test_ledger.jsonl").exists()  # a failed model never looks at test


def test_a_model_that_cannot_fit_one_batch_fails_the_stage(tmp_path):
    cfg = load_config(FAST, {"train.width": 1, "train.depth": 1})
    run = tmp_path / "run"
    with pytest.raises(GateFailed, match=r"could not overfit one batch of 16 windows: loss .* after 100 steps"):
        train(cfg, run, out=lambda line: None)
    report = json.loads((run / "train_report.json").read_text())
    assert report["status"] == "failed" and report["sanity"]["init_loss_ok"] is True
    assert report["sanity"]["overfit_ok"] is False
    assert report["sanity"]["overfit_batch_loss"] > cfg.train.search_space.overfit_max_loss
    assert not (run / "float.keras").exists()
