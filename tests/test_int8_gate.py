"""The float/int8 agreement gate (issue 21, part 3): agreement is a diagnostic; int8 is
rejected for it only if quantization changes more validation predictions than retraining
with another seed does AND int8 scores lower with its interval. And no interval from fewer
than 5 groups, in the paired differences too."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.ml import metrics
from pipeline.quantize.gates import accuracy_gates, agreement_gate, gate_message

Q = SimpleNamespace(min_float_int8_agreement=0.98, max_balanced_accuracy_drop=0.01, min_tflm_agreement=0.995)


def val(agreement: float, delta: float, ci=None, windows: int = 300, groups: int = 8) -> dict:
    d = {"metric": "balanced_accuracy", "delta": delta, "ci95": ci, "groups": groups}
    if ci is None:
        d["uncertainty"] = {"kind": "few_groups", "text": f"({groups} groups: no interval)"}
    return {"windows": windows, "agreement": {"float_int8": agreement},
            "float": {"balanced_accuracy": 0.874}, "int8": {"balanced_accuracy": 0.874 + delta},
            "delta_int8_minus_float": {"balanced_accuracy": d},
            "litert_vs_tflm": {"reference_kernels": {"top1_agreement": 1.0}}}


def refit(max_share: float, windows: int = 300) -> dict:
    return {"runs": [{"seed": 1, "share": max_share}], "windows": windows, "max": max_share, "mean": max_share}


# --------------------------------------------------------------------------- no interval from < 5 groups


def test_paired_delta_from_one_group_has_no_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    a = np.where(rng.random(200) < 0.8, y, 1 - y)
    b = np.where(rng.random(200) < 0.9, y, 1 - y)
    one = metrics.paired_delta(y, a, b, 2, "balanced_accuracy", groups=np.zeros(200), seed=0)
    assert one["ci95"] is None and one["groups"] == 1
    assert one["ci95_bootstrap"][0] == one["ci95_bootstrap"][1]  # the zero-width interval kept out of print
    text = metrics.delta_text(one)
    assert "no interval" in text and "[" not in text and text.startswith(f"{one['delta']:+.3f}")
    eight = metrics.paired_delta(y, a, b, 2, "balanced_accuracy", groups=np.arange(200) % 8, seed=0)
    assert eight["ci95"][0] < eight["delta"] < eight["ci95"][1] and "uncertainty" not in eight
    assert metrics.delta_text(eight) == (f"{eight['delta']:+.3f} [{eight['ci95'][0]:+.3f}, "
                                         f"{eight['ci95'][1]:+.3f}]")
    assert metrics.delta_text(None) == "n/a"
    same = metrics.paired_delta(y, a, a, 2, "balanced_accuracy", groups=np.arange(200) % 8, seed=0)
    assert same["ci95"] is None and metrics.delta_text(same) == "+0.000 (the same in every resample of the 8 groups: no interval)"


def test_refit_disagreement_is_the_share_of_changed_predictions():
    kept = np.array([0, 1, 1, 0, 2, 2, 1, 0, 0, 1])
    records = [{"seed": 1, "status": "ok", "val_predictions": [0, 1, 1, 0, 2, 2, 1, 0, 0, 0]},
               {"seed": 2, "status": "ok", "val_predictions": [1, 1, 1, 0, 2, 0, 1, 0, 0, 0]},
               {"seed": 3, "status": "failed"}]
    rec = metrics.refit_disagreement(kept, records)
    assert [r["share"] for r in rec["runs"]] == [0.1, 0.3]
    assert rec["max"] == 0.3 and rec["mean"] == pytest.approx(0.2) and rec["windows"] == 10
    assert all("val_predictions" not in r for r in records)  # not copied into the report
    assert metrics.refit_disagreement(kept, [])["max"] is None


# --------------------------------------------------------------------------- the agreement gate


def test_int8_better_than_float_is_never_rejected_for_agreement():
    """The real phone export: int8 0.917 vs float 0.874 balanced accuracy, agreement 0.953,
    one validation group."""
    g = agreement_gate(val(0.953, +0.043, groups=1), Q, None)
    assert g["passed"] and not g["int8_lower"]
    assert "not lower" in g["why"] and "no interval" in g["why"]


def test_more_changes_than_retraining_and_lower_is_rejected():
    g = agreement_gate(val(0.90, -0.05, ci=[-0.08, -0.02]), Q, refit(0.04))
    assert not g["passed"] and g["int8_lower"] and g["threshold"] == pytest.approx(0.96)
    msg = gate_message("float_int8_agreement", g)
    assert msg.startswith("float_int8_agreement 0.9000 < 0.9600 (val)")
    assert "retraining with another seed changed up to 4.0%" in msg and "scores lower" in msg


def test_fewer_changes_than_retraining_pass_even_when_lower():
    g = agreement_gate(val(0.90, -0.05, ci=[-0.08, -0.02]), Q, refit(0.12))
    assert g["passed"] and g["threshold"] == pytest.approx(0.88) and g["retrain_changed_max"] == 0.12


def test_lower_only_within_its_interval_is_not_rejected_for_agreement():
    g = agreement_gate(val(0.90, -0.02, ci=[-0.06, +0.01]), Q, refit(0.04))
    assert g["passed"] and not g["int8_lower"] and "not rejected for agreement" in g["why"]


def test_the_configured_floor_holds_without_refits_and_below_them():
    # no refits recorded (an older run, or [train] seeds = 1): the configured 0.98
    g = agreement_gate(val(0.97, -0.05, groups=2), Q, None)
    assert not g["passed"] and g["threshold"] == pytest.approx(0.98) and "no refits" in g["why"]
    # refits that changed fewer than the floor do not tighten it
    assert agreement_gate(val(0.985, -0.05, groups=2), Q, refit(0.0))["passed"]
    # a record for other windows (another split) is not used
    assert agreement_gate(val(0.97, -0.05, groups=2), Q, refit(0.5, windows=99))["threshold"] == pytest.approx(0.98)


def test_drop_gate_has_no_interval_from_few_groups():
    gates = accuracy_gates(val(0.953, -0.02, groups=1), Q, None)
    drop = gates["balanced_accuracy_drop"]
    assert drop["ci95"] is None and "no interval" in drop["uncertainty"]["text"] and not drop["passed"]
    gates = accuracy_gates(val(0.99, -0.005, ci=[-0.02, +0.01]), Q, None)
    assert gates["balanced_accuracy_drop"]["ci95"] == [-0.01, 0.02] and gates["balanced_accuracy_drop"]["passed"]
