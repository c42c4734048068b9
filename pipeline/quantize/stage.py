"""The quantize stage: ``float.keras`` -> full-int8 TFLite, checked, budgeted, exported as C.

1. Calibrate on the training windows only (all of them by default), convert to full int8,
   with headroom above the calibrated maximum of the logits.
2. Check every op is one TFLM can run, naming the Keras layer of any that is not.
3. Measure the TFLM arena (recorded and true minimum), count MACs, budget against the board.
4. Run the float model, the int8 model in LiteRT (default and reference kernels) and in
   TFLM on the same validation windows; compare them and apply the gates. When a gate is
   missed, try the input-handling remedies in order (REMEDIES) and keep the first that
   meets every gate.
5. Compare every layer (pipeline.quantize.layer_compare): where int8 loses the signal is printed
   with a failed gate and written to the report.
6. Only a model that passed every gate (or was accepted with --accept-drop, recorded as
   an override) is scored on the test split (once, in the ledger) and exported:
   ``quantize_report.json`` first (naming the model's SHA-256), then
   ``firmware/model_data.{h,cc}``, ``firmware/model_settings.h`` and ``int8.tflite``.

``quantize_report.json`` is written either way, so a failed gate's numbers are on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.artifacts import (
    read_json,
    remove_downstream,
    sha256_bytes,
    write_bytes,
    write_json,
    write_text,
)
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.core.ledger import record_test_look
from pipeline.core.stage import StageResult
from pipeline.data.splits import Prepared, cv_groups, load_run_split
from pipeline.data.windows import Windows
from pipeline.dsp import firmware as dsp_firmware
from pipeline.dsp.blocks import featurize
from pipeline.ml import metrics
from pipeline.quantize.calibration import (
    calibration_record,
    calibration_set,
    drop_outliers,
    input_clipping,
)
from pipeline.quantize.gates import (
    ACCURACY_GATES,
    HEADLINE,
    accuracy_gates,
    board_section,
    compare,
    gate_message,
    latency_estimates,
    latency_gate,
    latency_text,
    run_all,
    runtime_match,
    worst_classes,
)
from pipeline.quantize.layer_compare import compare_layers, jump_message, summary_lines
from pipeline.quantize.remedies import LADDER, REMEDIES, Candidate, NotApplicable, convert_remedy
from pipeline.tflite import export
from pipeline.tflite.flatbuffer import MACS_NOTE, ModelInfo, inspect_model, require_tflm_ops
from pipeline.tflite.litert import host_interpreter, run_litert
from pipeline.tflite.runtime import (
    HOST_FIGURE,
    NORMALIZATION_METADATA,
    InputNormalization,
    TFLMRunner,
    measure_arena,
    model_input,
    normalize_input,
    read_input_normalization,
)

FLOAT_MODEL = "float.keras"
MODEL = "int8.tflite"
REJECTED = "int8.rejected.tflite"
REPORT = "quantize_report.json"
TRAIN_REPORT = "train_report.json"  # read, not imported: no stage imports another
FIRMWARE = "firmware"
FIRMWARE_FILES = ("model_data.h", "model_data.cc", "model_settings.h", "dsp_settings.h")
TEST_PURPOSE = "int8 model (deployable)"


# --------------------------------------------------------------------------- inputs


@dataclass
class StageInputs:
    model: object  # keras.Model
    prepared: Prepared
    labels: list[str]
    refit: dict | None = None  # train_report.json's refit_seeds.val_disagreement (the agreement gate's reference)
    raw_window_shape: tuple = ()  # a raw window's (steps, channels): what the device's DSP reads

    @property
    def windows(self) -> dict[str, Windows]:
        return self.prepared.windows

    @property
    def layer_types(self) -> dict[str, str]:
        return {layer.name: type(layer).__name__ for layer in self.model.layers}


def load_inputs(cfg, run_dir: str | Path) -> StageInputs:
    """float.keras and the windows of the run's split (splits.json must match the config)."""
    run_dir = Path(run_dir)
    path = run_dir / FLOAT_MODEL
    if not path.exists():
        raise PipelineError(f"{path}: not found", hint="run `tinyml train` (make train) first")
    raw = load_run_split(cfg, run_dir)
    prepared = featurize(raw, cfg)  # [dsp]: what the model reads
    import keras

    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for a bad file
        raise PipelineError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from exc
    expected = tuple(prepared.windows["train"].X.shape[1:])
    got = tuple(model.input_shape[1:])
    if got != expected:
        raise PipelineError(f"{path}: the model takes inputs of shape {got}, the split's windows are {expected}",
                            hint="retrain: the split changed since float.keras was written")
    return StageInputs(model, prepared, list(prepared.manifest["dataset"]["label_names"]), _refit_record(run_dir),
                       tuple(raw.windows["train"].X.shape[1:]))


def _refit_record(run_dir: Path) -> dict | None:
    """How many validation predictions train's refits with other seeds changed, or None
    (an older run, ``[train] seeds = 1``, or no train report)."""
    path = run_dir / TRAIN_REPORT
    if not path.exists():
        return None
    rec = read_json(path, "the train report").get("refit_seeds")
    return rec.get("val_disagreement") if isinstance(rec, dict) else None


def evaluate_candidate(cfg, inputs: StageInputs, remedy: str, data: bytes, seconds: float,
                       norm: InputNormalization | None) -> Candidate:
    """Op check, arena, and the float / int8 / TFLM comparison on validation, with gates."""
    q = cfg.quantize
    info = inspect_model(data, inputs.layer_types)
    require_tflm_ops(info, inputs.layer_types)
    arena = measure_arena(data)
    arena_bytes = arena.exported(q.arena_margin)
    val_w = inputs.windows["val"]
    outs = run_all(inputs.model, data, val_w.X, info, arena_bytes, norm)
    val = compare(outs, val_w.y, inputs.labels, cv_groups(val_w, inputs.prepared.plan), cfg.seed,
                  info.output.scales[0], info.output.zero_points[0], group_word=inputs.prepared.group_word)
    val["split"] = "val"
    val["input_clipping"] = input_clipping(normalize_input(val_w.X, norm), info.input.scales[0],
                                           info.input.zero_points[0])
    val["gates"] = accuracy_gates(val, q, inputs.refit)
    return Candidate(remedy, data, seconds, norm, info, arena, arena_bytes, outs, val)


def run(cfg, run_dir: str | Path, *, out: Callable[[str], None] = print) -> StageResult:
    """The quantize stage (``pipeline.core.stage``): convert, check, budget and export the
    run's float model. Its report is ``quantize_report.json``, written whether it passes or not."""
    q = cfg.quantize
    run_dir = Path(run_dir)
    inputs = load_inputs(cfg, run_dir)
    remove_downstream(run_dir, "quantize")
    train = inputs.windows["train"]
    eligible = drop_outliers(train, q.calibration_outlier_z)
    calib = calibration_set(eligible, q.calibration_windows, cfg.seed)
    calibration = calibration_record(calib, q, inputs.labels, cfg.seed, len(train) - len(eligible), len(train))
    chosen, remedies = _try_remedies(cfg, run_dir, inputs, calib.X, calibration, out)
    report = check_and_export(cfg, run_dir, inputs, calibration, chosen.data, chosen.seconds, out,
                              candidate=chosen, remedies=remedies)
    return StageResult("quantize", run_dir / REPORT, report,
                       paths=(run_dir / MODEL, *(run_dir / FIRMWARE / name for name in FIRMWARE_FILES)))


def _try_remedies(cfg, run_dir: Path, inputs: StageInputs, calib_x, calibration: dict,
                  out: Callable[[str], None]) -> tuple[Candidate, dict]:
    """Convert with each remedy of the ladder in turn until one meets every gate; the kept
    candidate (that one, or the one int8 hurt least) and what each remedy gave."""
    q = cfg.quantize
    ladder = LADDER if q.input_handling == "auto" else (q.input_handling,)
    tried: list[Candidate] = []
    skipped: list[dict] = []
    for remedy in ladder:
        try:
            data, seconds, norm = convert_remedy(remedy, inputs.model, calib_x, q, inputs.layer_types)
        except NotApplicable as exc:
            skipped.append({"remedy": remedy, "what": REMEDIES[remedy], "skipped": str(exc)})
            continue
        except GateFailed as exc:
            _reject(run_dir, None, {
                "stage": "quantize", "labels": inputs.labels, "calibration": calibration,
                "conversion": {"per_channel": q.per_channel, "remedy": remedy, "error": exc.message},
                "gates_passed": False, "failures": [exc.message],
            })
            raise
        cand = _evaluate_or_reject(cfg, run_dir, inputs, calibration, remedy, data, seconds, norm)
        tried.append(cand)
        if len(ladder) > 1:
            out(f"quantize: remedy {remedy!r}: float/int8 agreement {cand.val['agreement']['float_int8']:.3f}, "
                f"balanced accuracy {cand.val['delta_int8_minus_float']['balanced_accuracy']['delta']:+.3f}"
                f" -> {'meets the gates' if cand.passed else 'misses a gate'}")
        if cand.passed:
            break
    if not tried:
        raise PipelineError(f"[quantize] input_handling {q.input_handling!r}: "
                            + "; ".join(x["skipped"] for x in skipped),
                            hint="use input_handling = \"graph\" (or \"auto\")")
    # The first that meets the gates; if none does, the one int8 hurt least, for inspection.
    chosen = tried[-1] if tried[-1].passed else max(
        tried, key=lambda c: (c.val["agreement"]["float_int8"], -tried.index(c)))
    remedies = {"tried": [c.summary() for c in tried] + skipped, "kept": chosen.remedy,
                "order": list(ladder),
                "qat": "not tried: quantization-aware training needs tensorflow-model-optimization, "
                       "which supports only Keras 2 (tf_keras), not the Keras 3 model trained here"}
    return chosen, remedies


def _evaluate_or_reject(cfg, run_dir: Path, inputs: StageInputs, calibration: dict, remedy: str,
                        data: bytes, seconds: float, norm: InputNormalization | None) -> Candidate:
    """``evaluate_candidate``; a model TFLM cannot run (an op it lacks, no arena that works)
    is rejected with its report written, since no remedy helps."""
    try:
        return evaluate_candidate(cfg, inputs, remedy, data, seconds, norm)
    except GateFailed as exc:
        report = _base_report(cfg, inputs, calibration, data, seconds,
                              inspect_model(data, inputs.layer_types), remedy, norm)
        report["failures"] = [exc.message]
        _reject(run_dir, data, report)
        raise


def _base_report(cfg, inputs: StageInputs, calibration: dict, data: bytes, seconds: float,
                 info: ModelInfo, remedy: str, norm: InputNormalization | None) -> dict:
    q = cfg.quantize
    return {
        "stage": "quantize",
        "labels": inputs.labels,
        "model_sha256": sha256_bytes(data),
        "calibration": calibration,
        "conversion": {
            "per_channel": q.per_channel,
            "seconds": round(seconds, 3),
            "remedy": remedy,
            "input": _tensor_record(info.input),
            "output": _tensor_record(info.output),
            "input_normalization": None if norm is None else {
                "where": "device, float32, before the int8 graph",
                "metadata": NORMALIZATION_METADATA,
                "formula": "q = quantize_int8((x - mean[c]) * inv_std[c], input scale, zero point), "
                           "c = flat index % channels",
                "mean": list(norm.mean), "inv_std": list(norm.inv_std)},
            "weights": "int8 per-channel" if q.per_channel else "int8 per-tensor",
            "activations": "int8",
            "host_input_rounding": "round half away from zero, then clamp to int8 (as TFLite)",
            "host_interpreter": host_interpreter()[2],
        },
        "ops": info.ops_table(),
        "tflm_ops": {"supported": not info.unsupported_ops(), "resolver": info.resolver_ops(),
                     "unsupported": sorted({op.name for op in info.unsupported_ops()})},
        "macs": {"per_layer": info.macs_per_layer(), "total": info.total_macs, "counted": MACS_NOTE},
        "latency_estimates": latency_estimates(data, info.total_macs, q.board, cfg.device.engine),
        "gates_passed": False,
    }


def check_and_export(cfg, run_dir: str | Path, inputs: StageInputs, calibration: dict, data: bytes,
                     seconds: float, out: Callable[[str], None] = print, candidate: Candidate | None = None,
                     remedies: dict | None = None, norm: InputNormalization | None = None) -> dict:
    """Everything after conversion: op check, arena, comparisons, gates, per-layer
    comparison, test look, export (``candidate``: already evaluated by ``run``)."""
    run_dir = Path(run_dir)
    q = cfg.quantize
    if candidate is None:
        norm = norm if norm is not None else read_input_normalization(data)
        candidate = _evaluate_or_reject(cfg, run_dir, inputs, calibration, "given", data, seconds, norm)
    norm, info, sha = candidate.norm, candidate.info, sha256_bytes(data)
    report = _base_report(cfg, inputs, calibration, data, seconds, info, candidate.remedy, norm)
    if remedies is not None:
        report["remedies"] = remedies
    arena_bytes = candidate.arena_bytes
    report["memory"] = {"model_bytes": len(data), **candidate.arena.as_dict(q.arena_margin)}
    report["board"] = board_section(q.board, q, len(data), arena_bytes)
    gate = latency_gate(report["latency_estimates"], cfg.train.max_latency_ms)
    if gate:
        report["board"]["latency"] = gate
    report["validation"] = candidate.val
    report["per_layer"] = _per_layer(inputs, data, info, norm)
    failures, gate_failures, overridable = _failures(report, q.board)
    if failures and q.accept_drop and overridable:
        # The override goes first in the report, so it is the first thing a reader sees.
        report = {"override": {
            "accept_drop": True,
            "failed_gates": sorted(gate_failures),
            "failures": failures,
            "note": "exported with --accept-drop ([quantize] accept_drop = true) although it missed "
                    "the accuracy gate(s) above",
        }, **report}
        out("quantize: OVERRIDE --accept-drop: exporting a model that missed " + "; ".join(gate_failures.values()))
        failures = []
    report["failures"] = failures
    if failures:
        _reject(run_dir, data, report)
        _summary(report, out)
        raise GateFailed(
            "quantize gate(s) failed: " + "; ".join(failures),
            hint=f"the numbers are in {run_dir / REPORT}; the rejected model is {run_dir / REJECTED}"
            + ("; `tinyml quantize --accept-drop` exports it anyway, recorded as an override"
               if overridable else ""),
        )

    report["gates_passed"] = "override" not in report
    report["test"] = _test_look(cfg, run_dir, inputs, data, info, arena_bytes, sha, norm)
    firmware = _firmware_texts(data, sha, info, inputs.labels, arena_bytes, q.board,
                               inputs.prepared.manifest["dataset"].get("rate_hz"), norm)
    firmware["dsp_settings.h"] = export.dsp_settings_h(export.DspSettings(  # [dsp]: what the device runs on a raw window
        **dsp_firmware.settings(cfg.dsp, inputs.prepared.dataset.rate_hz, inputs.raw_window_shape,
                                int(inputs.windows["train"].X[0].size))))
    report["firmware"] = {"dir": FIRMWARE, "array": export.ARRAY, "length": export.LENGTH, "alignment": 16,
                          "files": {f"{FIRMWARE}/{name}": sha256_bytes(text.encode("utf-8"))
                                    for name, text in firmware.items()}}
    _publish(run_dir, data, report, firmware)
    _summary(report, out)
    return report


def _per_layer(inputs: StageInputs, data: bytes, info: ModelInfo, norm: InputNormalization | None) -> dict:
    """The per-layer comparison on the validation windows (``layer_compare``), or why not."""
    val_w = inputs.windows["val"]
    x_q = model_input(val_w.X, info.input.scales[0], info.input.zero_points[0], norm)
    try:
        return compare_layers(inputs.model, data, info, val_w.X, x_q, normalize_input(val_w.X, norm),
                              "normalize" if norm is not None else inputs.model.layers[0].name)
    except Exception as exc:  # a diagnostic: a model it cannot take apart must not stop the stage
        return {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}", "jump": None}


def _failures(report: dict, board: str) -> tuple[list[str], dict[str, str], bool]:
    """What failed (gates, then where and why, then the board budget), the failed gates by
    name, and whether ``--accept-drop`` may override them (accuracy gates only)."""
    val, layers = report["validation"], report["per_layer"]
    gate_failures = {name: gate_message(name, g) for name, g in val["gates"].items() if not g["passed"]}
    failures = list(gate_failures.values())
    if failures:
        where = jump_message(layers.get("jump"))
        if where:
            failures.append(where)
        failures.append("worst classes: " + ", ".join(worst_classes(val)))
        clip = val["input_clipping"]
        if clip["windows_share"] > 0:
            failures.append(f"{clip['windows_share']:.0%} of val windows have inputs outside the int8 range "
                            f"[{clip['range'][0]:.3g}, {clip['range'][1]:.3g}] seen in calibration (clamped)")
    board_failures = []
    for part, fit in report["board"]["fits"].items():
        if not fit["passed"]:
            board_failures.append(
                f"{part}: {fit['used_bytes']:,} B ({fit['what']}) over the {board} budget of "
                f"{fit['budget_bytes']:,} B ({report['board']['budgets'][part + '_source']})")
    lat = report["board"].get("latency")
    if lat and not lat["passed"]:
        board_failures.append(f"latency: {lat['ms']:.2f} ms ({lat['label']}) over [train] max_latency_ms "
                              f"{lat['max_ms']:g} on {board}")
    overridable = bool(gate_failures) and set(gate_failures) <= set(ACCURACY_GATES) and not board_failures
    return failures + board_failures, gate_failures, overridable


def _publish(run_dir: Path, data: bytes, report: dict, firmware: dict[str, str]) -> None:
    """One unit: the old model goes first, then the report naming the new model's SHA-256,
    then the firmware files and the model. A kill at any point leaves either no model or a
    report that names a model the reader can check (issue 13)."""
    (run_dir / MODEL).unlink(missing_ok=True)
    write_json(run_dir / REPORT, report)
    for name, text in firmware.items():
        write_text(run_dir / FIRMWARE / name, text)
    write_bytes(run_dir / MODEL, data)
    (run_dir / REJECTED).unlink(missing_ok=True)


def _tensor_record(t) -> dict:
    return {"shape": list(t.shape), "dtype": t.dtype, "scale": t.scales[0] if t.scales else None,
            "zero_point": t.zero_points[0] if t.zero_points else None}


def _reject(run_dir: Path, data: bytes | None, report: dict) -> None:
    """A model that failed a gate is kept for inspection, never left where make or the
    flash step would take it for the deployable one; the report says what failed. The
    failure report is written first, so no earlier success report is ever left beside a
    missing model, and a report that cannot be written leaves the old model in place."""
    if data is not None:
        report["rejected_model"] = REJECTED
        report["rejected_model_sha256"] = sha256_bytes(data)
    write_json(run_dir / REPORT, report)
    for stale in [run_dir / MODEL, run_dir / REJECTED, *(run_dir / FIRMWARE / f for f in FIRMWARE_FILES)]:
        stale.unlink(missing_ok=True)
    if data is not None:
        write_bytes(run_dir / REJECTED, data)


def _test_look(cfg, run_dir: Path, inputs: StageInputs, data: bytes, info: ModelInfo,
               arena_bytes: int, sha: str, norm: InputNormalization | None = None) -> dict:
    """The deployable int8 model on the test split: once, recorded in the ledger."""
    test_w = inputs.windows["test"]
    inp = info.input
    x_q = model_input(test_w.X, inp.scales[0], inp.zero_points[0], norm)
    int8 = run_litert(data, x_q, reference=True)
    tflm = TFLMRunner(data, arena_bytes).predict(x_q)
    groups = cv_groups(test_w, inputs.prepared.plan)
    result = metrics.score_with_intervals(test_w.y, int8.argmax(1), inputs.labels, groups=groups, seed=cfg.seed,
                                          group_word=inputs.prepared.group_word)
    entry = record_test_look(run_dir, "quantize", TEST_PURPOSE, sha, result,
                             split_sha256=inputs.prepared.manifest["test_sha256"])
    return {
        "split": "test",
        "model": "int8 (LiteRT reference kernels)",
        **result,
        "litert_vs_tflm": runtime_match(int8, tflm),
        "ledger": {"purpose": TEST_PURPOSE, "look": entry["look"], "warning": entry.get("warning")},
    }


def _firmware_texts(data: bytes, sha: str, info: ModelInfo, labels: list[str], arena_bytes: int,
                    board: str, rate_hz, norm: InputNormalization | None) -> dict[str, str]:
    channels = int(info.input.shape[-1]) if info.input.shape else 1
    norm = norm or InputNormalization.identity(channels)
    settings = export.ModelSettings(
        labels=labels, input_shape=list(info.input.shape),
        input_scale=info.input.scales[0], input_zero_point=info.input.zero_points[0],
        output_scale=info.output.scales[0], output_zero_point=info.output.zero_points[0],
        arena_bytes=arena_bytes, macs=info.total_macs, ops=info.resolver_ops(), sha256=sha,
        board=board, sample_rate_hz=float(rate_hz or 0.0),
        input_mean=list(norm.mean), input_inv_std=list(norm.inv_std),
    )
    return {
        "model_data.h": export.model_data_h(),
        "model_data.cc": export.model_data_cc(data, MODEL, sha),
        "model_settings.h": export.model_settings_h(settings),
    }


# --------------------------------------------------------------------------- summary


def _summary(report: dict, out: Callable[[str], None]) -> None:
    if report.get("override"):
        out("OVERRIDE: " + report["override"]["note"] + ": " + "; ".join(report["override"]["failed_gates"]))
    val = report.get("validation")
    conv = report["conversion"]
    cal = report["calibration"]
    out(f"quantize: full int8 ({conv['weights']} weights), calibrated on {cal['windows']} train windows "
        f"({cal['outlier_windows_left_out']} outlier windows left out), converted in {conv['seconds']:.1f} s; "
        f"input: {REMEDIES.get(conv.get('remedy'), conv.get('remedy'))}")
    if val:
        out(f"validation split: {val['windows']} windows, {val['groups']} groups")
        out(f"  {'':<22}{'float':>10}{'int8 LiteRT':>14}{'int8 TFLM':>12}   (LiteRT: reference kernels)")
        for m in HEADLINE:
            out(f"  {m.replace('_', ' '):<22}{val['float'][m]:>10.3f}{val['int8'][m]:>14.3f}{val['tflm'][m]:>12.3f}")
        ag = val["agreement"]
        out(f"  {'top-1 agreement':<22}{'(float)':>10}{ag['float_int8']:>14.3f}{ag['float_tflm']:>12.3f}")
        rf = val["litert_vs_tflm"]["reference_kernels"]
        df = val["litert_vs_tflm"]["default_kernels"]
        dflt = (f"not run: {df['not_run']}" if df.get("not_run") else
                f"top-1 {df['top1_agreement']:.3f}, bit-identical {df['bit_identical_share']:.1%}, "
                f"max {df['max_lsb_difference']} LSB")
        out(f"  LiteRT vs TFLM: top-1 {rf['top1_agreement']:.3f}, bit-identical {rf['bit_identical_share']:.1%}, "
            f"max {rf['max_lsb_difference']} LSB (LiteRT default kernels, not gated: {dflt})")
        d = val["delta_int8_minus_float"]["balanced_accuracy"]
        e = val["output_error"]
        clip = val["input_clipping"]
        if clip["windows_share"] > 0:
            out(f"  {clip['windows_share']:.1%} of windows have inputs outside the int8 input range "
                f"[{clip['range'][0]:.3g}, {clip['range'][1]:.3g}] (clamped)")
        out(f"  int8 - float balanced accuracy {metrics.delta_text(d)}, "
            f"McNemar p={val['mcnemar_float_vs_int8']['p_value']:.3g}; output RMSE {e['rmse']:.4f}, "
            f"cosine {'n/a' if e['cosine_similarity'] is None else format(e['cosine_similarity'], '.5f')}")
        for name, g in val["gates"].items():
            value = g["value"] if isinstance(g["value"], int) else round(g["value"], 4)
            ci = f" (95% CI [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}])" if g.get("ci95") else ""
            threshold = g["threshold"] if isinstance(g["threshold"], int) else round(g["threshold"], 4)
            out(f"  gate {name}: {value}{ci} {g['rule']} {threshold}  {'ok' if g['passed'] else 'FAILED'}")
            if g.get("why"):
                out(f"    ({g['why']})")
    layers = report.get("per_layer")
    if layers and layers.get("error"):
        out(f"per layer: not compared ({layers['error']})")
    elif layers:
        out(f"per layer on {layers['windows']} val windows: float vs int8 (dequantized), and LiteRT vs TFLM "
            "in LSB (reported, not gated)")
        for line in summary_lines(layers):
            out(line)
        msg = jump_message(layers["jump"])
        if msg and layers["jump"]["significant"]:
            out("  " + msg)
    rem = report.get("remedies")
    if rem and len(rem["tried"]) > 1:
        out("remedies tried in order: " + ", ".join(
            f"{r['remedy']} ({'skipped' if 'skipped' in r else format(r['float_int8_agreement'], '.3f') + ' agreement'})"
            for r in rem["tried"]) + f"; kept {rem['kept']!r}")
    board = report.get("board")
    mem = report.get("memory")
    if board and mem:
        b = board["profile"]
        fits = board["fits"]
        out(f"board {b['name']} ({b['title']}):")
        out(f"  flash  {mem['model_bytes']:>9,} B model          budget {fits['flash']['budget_bytes']:>9,} B  "
            f"{'ok' if fits['flash']['passed'] else 'DOES NOT FIT'}")
        out(f"  RAM    {mem['arena_bytes_exported']:>9,} B tensor arena   budget {fits['ram']['budget_bytes']:>9,} B  "
            f"{'ok' if fits['ram']['passed'] else 'DOES NOT FIT'}")
        out(f"         (min {mem['arena_min_bytes']:,} B by bisection + {mem['margin']:.0%} margin; "
            f"recorded {mem['arena_recorded_bytes']:,} B; {HOST_FIGURE}s)")
    macs = report["macs"]["total"]
    est = next(e for e in report["latency_estimates"].values() if e["configured"])
    out(f"  MACs   {macs:>9,}  latency {latency_text(est)}")
    test = report.get("test")
    if test:
        out(f"test split (int8, look {test['ledger']['look']} in test_ledger.jsonl): balanced accuracy "
            f"{metrics.metric_text(test, 'balanced_accuracy')}, macro-F1 {test['macro_f1']:.3f}")
    if report.get("gates_passed"):
        out(f"wrote {MODEL}, {REPORT}, " + ", ".join(report["firmware"]["files"]))
    else:
        out(f"gates failed: wrote {REPORT} and {REJECTED}")
