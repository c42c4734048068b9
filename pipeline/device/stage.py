"""The flash and on-device evaluation stage: where the host pipeline and the device bridge meet.

The pipeline side provides the test windows, the host int8 reference and the scoring
(``pipeline.device.scoring``); the bridge side (``firmware_bridge``) talks to the device and
writes what it said. ``run`` is the stage's one entry point (``pipeline.core.stage``):

- ``tinyml flash``: the sketch, the image for the chosen target (the virtual device's flash,
  the QEMU firmware, or a real board through arduino-cli), then the evaluation;
- ``tinyml eval``: the evaluation alone, resumable: stream the test split to the device,
  score what came back, compare it with the host int8 model, write ``device_report.json``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from firmware_bridge.host.streaming import stream_windows, stream_windows_resuming
from firmware_bridge.targets import arduino, qemu
from firmware_bridge.targets.sketch import generate_sketch
from pipeline.core.artifacts import (
    atomic_path,
    read_json,
    sha256_bytes,
    sha256_file,
    write_bytes,
    write_json,
)
from pipeline.core.boards import CYCLES_PER_MAC_OPTIMIZED, CYCLES_PER_MAC_REFERENCE, get_board
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.core.ledger import record_test_look
from pipeline.core.progress import progress
from pipeline.core.stage import StageResult
from pipeline.data.splits import cv_groups, load_run_split
from pipeline.device import agreement, scoring
from pipeline.device.connect import (
    FLASH_DIR,
    Connected,
    build_host_image,
    build_qemu_image,
    check_engine,
    device_identity,
    require,
    verify_model,
)
from pipeline.dsp.blocks import featurize
from pipeline.tflite.export import parse_model_data_cc, parse_model_settings_h
from pipeline.tflite.runtime import (
    TFLMRunner,
    dequantize_int8,
    model_input,
    read_input_normalization,
)

PURPOSE = "on-device evaluation"  # the ledger's name for this look at the test set


def run(cfg, run_dir, *, out=print, device: str | None = None, flash: bool = True, evaluate: bool = True,
        restart: bool = False, dry_run: bool = False, prepared=None) -> StageResult:
    """Flash (``flash=True``) and/or evaluate on the device; ``device`` overrides ``[device] port``
    (emu, qemu, auto or a port). ``flash=False`` is ``tinyml eval``: the device already holds
    the model; ``restart`` discards its earlier results. ``device_report.json`` is the report."""
    run_dir = Path(run_dir)
    if device:
        cfg = copy.deepcopy(cfg)
        cfg.device.port = device
    if flash:
        code = flash_device(cfg, run_dir, dry_run=dry_run, evaluate=evaluate, out=out)
    else:
        code = evaluate_on_device(cfg, run_dir, restart=restart, prepared=prepared, out=out)
    evaluated = evaluate and not dry_run
    path = run_dir / scoring.REPORT
    return StageResult("flash" if flash else "eval", path if evaluated else None,
                       read_json(path, "the device report") if evaluated else {}, exit_code=code)


# ------------------------------------------------------------------------------ flash


def flash_device(cfg, run: Path, dry_run: bool = False, evaluate: bool = True, out=print) -> int:
    """The Arduino sketch, the image for ``[device] port``, then (``evaluate``) the evaluation."""
    require(run, "int8.tflite", "quantize")
    target = cfg.device.port
    check_engine(cfg)  # tflm is the Arduino sketch's engine, not the host board's or QEMU's
    if dry_run:
        _say_what_would_be_done(cfg, run, evaluate, out)
        return 0
    _model_sha256(run)
    sketch = generate_sketch(run, engine=cfg.device.engine)
    out(f"flash: Arduino sketch in {sketch} (engine: {cfg.device.engine})")
    prepared = load_run_split(cfg, run)  # once, for the sensor recordings and the test windows
    if target == "emu":
        flash_dir = write_flash_image(cfg, run, prepared)
        out(f"flash: flash image in {flash_dir} (model parsed back from firmware/model_data.cc, test recordings "
            "for the board's sensor)")
        build_host_image(cfg, run, announce=True, out=out)
    elif target == "qemu":
        _write_sensor_recordings(run / FLASH_DIR / "sensor.npz", prepared)  # what the board's IMU plays
        build_qemu_image(run, announce=True, out=out, board=cfg.quantize.board)
    else:
        arduino.flash_real_board(sketch, cfg.quantize.board, target, dry_run=False)
    if not evaluate:
        return _check_flashed(cfg, run, prepared, out)
    return evaluate_on_device(cfg, run, prepared=prepared, out=out)


def _say_what_would_be_done(cfg, run: Path, evaluate: bool, out) -> None:
    target = cfg.device.port
    out(f"would generate the Arduino sketch in {run / 'firmware'}")
    if target == "emu":
        out(f"would write the flash image to {run / FLASH_DIR} from firmware/model_data.cc, build the host board "
            "(the firmware for this computer, g++) if its inputs changed, boot it and check the SHA-256 it reports")
    elif target == "qemu":
        out(f"would build {run / qemu.BUILD_DIR / qemu.ELF_NAME} (if its inputs changed) and boot it in "
            f"qemu-system-arm -M {qemu.MACHINE}, and check the SHA-256 it reports")
    else:
        fqbn = arduino.board_fqbn(get_board(cfg.quantize.board))
        port = arduino.PORT_PLACEHOLDER if target == "auto" else target
        out("would run:\n" + arduino.format_commands(
            arduino.arduino_commands(run / "firmware" / "tinyml_device", fqbn, port, engine=cfg.device.engine)))
    if evaluate:
        out("would stream the test split to the device (tinyml eval)")


def write_flash_image(cfg, run: Path, prepared=None) -> Path:
    """The flash image, written from the exported C sources (so the export is what gets
    tested), plus recordings of the test split for the host board's sensor to play."""
    cc = require(run, "firmware/model_data.cc", "quantize")
    h = require(run, "firmware/model_settings.h", "quantize")
    model = parse_model_data_cc(cc.read_text(encoding="utf-8"), str(cc))
    settings = parse_model_settings_h(h.read_text(encoding="utf-8"), str(h))
    tflite = require(run, "int8.tflite", "quantize").read_bytes()
    if model != tflite:
        raise GateFailed(
            f"{cc}: the C array ({len(model)} bytes, SHA-256 {sha256_bytes(model)[:12]}) is not int8.tflite "
            f"({len(tflite)} bytes, {sha256_bytes(tflite)[:12]})",
            hint="the export is stale: run `tinyml quantize` again",
        )
    flash_dir = run / FLASH_DIR
    write_bytes(flash_dir / "model.tflite", model)
    write_json(flash_dir / "settings.json", {
        "labels": settings["labels"], "board": settings["board"], "macs": settings["macs"],
        "arena_cap_bytes": None, "model_sha256": settings["sha256"],
        "written_from": [str(cc.relative_to(run)), str(h.relative_to(run))],
    })
    _write_sensor_recordings(flash_dir / "sensor.npz", prepared or load_run_split(cfg, run))
    return flash_dir


def _write_sensor_recordings(sensor: Path, prepared) -> None:
    """The test split's raw recordings, for the board's sensor to play back (host board, QEMU; when
    the data are unwindowed time series with a rate); otherwise no recordings."""
    ds = prepared.dataset
    if ds.kind == "timeseries" and not ds.windowed and ds.rate_hz:
        idx = prepared.plan.indices["test"]
        n = min(ds.samples[i].shape[0] for i in idx)
        X = np.stack([ds.samples[i][:n] for i in idx]).astype(np.float32)
        with atomic_path(sensor) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, X=X, rate_hz=np.float64(ds.rate_hz))
    elif sensor.exists():
        sensor.unlink()


def _check_flashed(cfg, run: Path, prepared, out) -> int:
    test = featurize(prepared, cfg).windows["test"]  # [dsp]: the model's input size
    with Connected(cfg, run, out) as (client, _):
        info = verify_model(client, _model_sha256(run), prepared.manifest["dataset"]["label_names"],
                            int(test.X[0].size) if len(test) else None)
    out(f"flash: the device reports model {info.get('sha256', '?')[:12]}: "
        + ("matches int8.tflite" if info.get("sha256_verified") else info.get("note", "")))
    return 0


def _model_sha256(run: Path) -> str:
    """SHA-256 of int8.tflite, which must be the model quantize_report.json describes."""
    model = require(run, "int8.tflite", "quantize")
    sha = sha256_file(model)
    report = read_json(require(run, "quantize_report.json", "quantize"), "the quantize report")
    want = report.get("model_sha256") if isinstance(report, dict) else None
    if sha != want:
        raise PipelineError(
            f"{model}: SHA-256 {sha[:12]} is not the model quantize_report.json describes "
            f"({want[:12] if isinstance(want, str) else want!r})",
            hint="the model was replaced or the quantize stage was cut short: run `tinyml quantize` again",
        )
    return sha


# ------------------------------------------------------------------------------ evaluate


def host_int8_probabilities(run: Path, X):
    """The host TFLM interpreter on the same windows, inputs quantized as the firmware does."""
    data = (run / "int8.tflite").read_bytes()
    memory = read_json(run / "quantize_report.json", "the quantize report").get("memory", {})
    runner = TFLMRunner(data, max(int(memory.get("arena_bytes_exported") or 0), 1 << 20))
    qi, qo = runner.input_details["quantization_parameters"], runner.output_details["quantization_parameters"]
    if not len(qi["scales"]) or not len(qo["scales"]):
        raise PipelineError(f"{run / 'int8.tflite'}: not an int8 model (its input or output has no quantization)",
                            hint="run `tinyml quantize`: flash and eval take its full-integer model")
    x_q = model_input(X, float(qi["scales"][0]), int(qi["zero_points"][0]), read_input_normalization(data))
    out = runner.predict(x_q, desc="host TFLM")
    return dequantize_int8(out, float(qo["scales"][0]), int(qo["zero_points"][0]))


def evaluate_on_device(cfg, run: Path, restart: bool = False, prepared=None, out=print) -> int:
    """Stream the test split to the device, resumably; score it; compare with host int8."""
    run = Path(run)
    model_sha = _model_sha256(run)  # int8.tflite, and the one the quantize report describes
    # [dsp]: the device computes the features from raw windows, as Edge Impulse's run-impulse has it;
    # the host library's features (what the host int8 model reads) are checked against its, byte for byte
    raw = prepared or load_run_split(cfg, run)
    prepared = featurize(raw, cfg)
    raw_test = raw.windows["test"] if cfg.dsp.block != "raw" else None
    # An edited line stops here, named (a torn last line is dropped, said); --restart
    # discards the file, damaged or not, once the device is verified.
    earlier = ([], 0) if restart else scoring.read_results(run / scoring.RESULTS, warn=out)
    connection = Connected(cfg, run, out)
    with connection as (client, info):
        streamed = _stream(connection, client, info, prepared, model_sha, earlier, restart, out, raw_test)
    report = _score(cfg, run, prepared, info, streamed, out)
    if raw_test is not None:
        report["dsp_features"] = scoring.feature_identity(scoring.read_results(run / scoring.RESULTS)[0],
                                                          prepared.windows["test"].window_ids, cfg.dsp.block)
        out(scoring.feature_identity_line(report["dsp_features"]))
    entry = record_test_look(run, "flash", PURPOSE, model_sha, report["metrics"], prepared.manifest.get("test_sha256"))
    report["ledger"] = {"look": entry["look"], "warning": entry.get("warning")}
    scoring.write_device_report(run, report)
    out(scoring.comparison_table(run, report))
    if "measured_on_emulated_cortex_m4" in report:
        out(_qemu_summary(report["measured_on_emulated_cortex_m4"]))
    scoring.check_features(report.get("dsp_features"), run / scoring.REPORT)  # the features, then the outputs
    agreement.check(report.get("int8_agreement"))  # first: it names the window and the output
    # Below [device] min_agreement the evaluation fails (exit 1), its report written first.
    scoring.check_agreement(report, run / scoring.REPORT, run / "report.html")
    return 0


def _stream(connection: Connected, client, info: dict, prepared, model_sha: str, earlier: tuple[list[dict], int],
            restart: bool, out, raw_test=None) -> dict:
    """Verify the model on the device, discard results of another model or device (``earlier``:
    the results file's records and torn lines), and stream the test windows it lacks: what the
    device said goes to device_eval.jsonl."""
    test, labels = prepared.windows["test"], prepared.manifest["dataset"]["label_names"]
    results = connection.run / scoring.RESULTS
    earlier, torn_before = earlier
    input_size = int(test.X[0].size) if len(test) else None
    model = verify_model(client, model_sha, labels, input_size)
    identity = device_identity(client, info)
    # Results are resumed only from this model on this device (port type, id and type).
    stale = [r for r in earlier if r.get("model_sha256") != model_sha or r.get("device") != identity]
    if stale and not restart:
        other = stale[0]
        what = (f"another model ({(other.get('model_sha256') or 'unknown')[:12]})"
                if other.get("model_sha256") != model_sha else f"another device ({other.get('device')})")
        out(f"eval: {results.name} holds results of {what}; starting over")
    if (restart or stale) and results.exists():
        results.unlink()
    emulated = connection.board is not None
    kind = {"host": "the firmware on the host board", "qemu": "firmware on QEMU's emulated Cortex-M4"}.get(
        connection.kind, "device")
    out(f"eval: streaming {len(test)} test windows to {info['port']} ({kind}), resuming from {results.name}")
    # A [dsp] model: raw windows go to the device, which computes the features (raw_test).
    stream_args = (test.X if raw_test is None else raw_test.X, test.window_ids, [labels[i] for i in test.y], results)
    show = lambda it, total: progress(it, "device", total=total, unit="window")  # noqa: E731
    checks = {"label_names": list(labels), "device_identity": identity,
              "strict_order": not model.get("sha256_verified", False),
              "host_features": None if raw_test is None else test.X}
    measured = None
    if emulated:
        # A reset or a fault of the firmware: reconnect and resume, each window once.
        def reconnect():
            fresh = connection.reconnect()
            verify_model(fresh, model_sha, labels, input_size)
            return fresh

        stats, client = stream_windows_resuming(client, reconnect, *stream_args, progress=show,
                                                model_sha256=model_sha, **checks)
        if connection.kind == "qemu":
            measured = _qemu_measurements(connection.run, connection.image, client, stream_args[0][0])
    else:
        stats = stream_windows(client, *stream_args, progress=show, model_sha256=model_sha, **checks)
    return {"model": model, "identity": identity, "stats": stats, "torn_before": torn_before,
            "emulated": emulated, "measured": measured, "device_type": client.config.device_type,
            "output_quantization": _output_quantization(client) if emulated else None}


def _score(cfg, run: Path, prepared, info: dict, streamed: dict, out) -> dict:
    """The device report: what the device said, scored and compared with the host int8 model."""
    test, labels = prepared.windows["test"], prepared.manifest["dataset"]["label_names"]
    records, torn = scoring.read_results(run / scoring.RESULTS, warn=out)
    host = host_int8_probabilities(run, test.X)
    groups = cv_groups(test, prepared.plan)  # intervals resample what the split kept whole
    emulated = streamed["emulated"]
    report = scoring.build_device_report(
        records, test.window_ids, test.y, groups, labels, host,
        device_info={**info, **streamed["model"],
                     "device_type": streamed["device_type"], "identity": streamed["identity"],
                     "timing_note": HOST_TIMING_NOTE if info.get("board") == "host"
                                    else QEMU_TIMING_NOTE if emulated
                                    else "as measured and reported by the device"},
        throughput={**streamed["stats"].as_dict(), "torn_lines_dropped": streamed["torn_before"] + torn},
        min_agreement=cfg.device.min_agreement,
        output_quantization=streamed["output_quantization"],
        group_word=prepared.group_word,
    )
    override = (read_json(run / "quantize_report.json", "the quantize report") or {}).get("override")
    if override:  # first in the device report too: the model on the device missed a gate
        report = {"override": override, **report}
        out("eval: OVERRIDE: this model was exported with --accept-drop although it missed "
            + ", ".join(override.get("failed_gates", [])))
    if streamed["measured"] is not None:
        report["measured_on_emulated_cortex_m4"] = streamed["measured"]
    if streamed["output_quantization"] is not None:  # the host board and QEMU: every int8 output
        device = scoring._device_probabilities({r["window_id"]: r for r in records}, test.window_ids, labels)
        report["int8_agreement"] = agreement.int8_agreement(
            device, host, agreement.litert_reference(run, test.X), test.window_ids, labels,
            streamed["output_quantization"])
        out(agreement.summary(report["int8_agreement"]))
    return report


HOST_TIMING_NOTE = ("board time of the host board: cycles per inference (device.host_board.timing.source: measured "
                    "on QEMU's Cortex-M4 for this model, else modelled from its MACs) over the board's clock "
                    "(pipeline/core/boards.py); never this computer's time")
QEMU_TIMING_NOTE = ("virtual time of QEMU's -icount shift=0 (1 ms = 1,000,000 instructions): an instruction "
                    "count, not a latency; see measured_on_emulated_cortex_m4")


def _output_quantization(client) -> tuple[float, int]:
    fields = client.model_info().fields
    return float(fields["output scale"]), int(fields["output zero point"])


def _qemu_measurements(run: Path, image, client, window) -> dict:
    """Flash and RAM of the ELF, the stack's high-water mark and instructions per inference
    read back from the firmware, with the MAC-based estimate beside them."""
    profile = qemu.read_profile(client)
    if profile["inferences"] == 0:  # every window was resumed: this boot has run none yet
        client.classify(window)
        profile = qemu.read_profile(client)
    macs = read_json(run / "quantize_report.json", "the quantize report").get("macs", {}).get("total")
    figures = qemu.measured_figures(image, profile, macs)
    qemu.record_profile(image, figures, sha256_file(run / "int8.tflite"))  # the host board's board time
    return figures


def _qemu_summary(m: dict) -> str:
    est = m.get("mac_estimate", {})
    line = (f"measured on an emulated Cortex-M4 ({m['machine']}): flash {m['flash_bytes_text_plus_data']:,} B, "
            f"static RAM {m['static_ram_bytes_data_plus_bss']:,} B, stack high-water {m['stack_high_water_bytes']:,} B "
            f"of {m['stack_size_bytes']:,}, {m['instructions_per_inference']:,} instructions per inference")
    if est:
        line += (f"\nestimated from {est['macs']:,} MACs: {est['estimated_cycles_reference_kernels']:,} cycles with "
                 f"reference kernels ({CYCLES_PER_MAC_REFERENCE:g} cycles/MAC), "
                 f"{est['estimated_cycles_optimized_kernels']:,} optimized ({CYCLES_PER_MAC_OPTIMIZED:g}); measured {est['measured_instructions_per_mac']} instructions/MAC")
    return line
