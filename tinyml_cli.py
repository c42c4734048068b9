"""`tinyml`: the one command that composes the host pipeline and the device bridge.

Stages import their heavy libraries (TensorFlow, LiteRT, TFLM) only when they run, so
`tinyml --help`, `tinyml ports` and `tinyml monitor` start in about a second.
Errors print one line and a hint; exit 2 for bad input or usage, 1 for a failed check.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STAGES = {
    "audit": "split the data and audit it for leakage and defects (writes splits.json, audit.json)",
    "train": "audit, baselines, sanity checks, random search, float model (writes float.keras)",
    "quantize": "full-int8 TFLite, checked against float and TFLM, budgeted, exported as C",
    "compile": "the int8 model as plain C, byte-identical to TFLM (writes firmware/compiled/)",
    "flash": "put the int8 model on a device (virtual by default) and evaluate it there",
    "eval": "stream the test split to a device over serial and score what comes back",
    "report": "one page a person can read (report.html, report.md)",
    "emulate": "run the virtual device on a pseudo-terminal (or a socket://) until stopped",
    "monitor": "live predictions from any Edge Impulse firmware (AT+RUNIMPULSE)",
    "ports": "list serial ports with a board guess from their USB VID:PID",
    "capture": "record labelled samples from any Edge Impulse firmware into an export folder",
}

FAST_CONFIG = Path(__file__).resolve().parent / "pipeline" / "core" / "configs" / "fast.toml"


def _add_common(p: argparse.ArgumentParser, run: bool = True) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="TOML config file (sections [data] [split] [audit] [train] [quantize] [device])")
    g.add_argument("--fast", action="store_true", help="use the small built-in fast config (for tests and smoke runs)")
    g.add_argument("--dataset", metavar="NAME|PATH", help="motion (default), digits, an Edge Impulse export folder, a .npz or a .csv")
    g.add_argument("--seed", type=int, metavar="N", help="seed for the split, initialization and search (default 0)")
    if run:
        g.add_argument("--run", metavar="DIR", default="models", help="run directory for artifacts (default: models)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyml",
        description="A tinyML deployment pipeline that will not let you fool yourself.",
        epilog="Typical use: tinyml train && tinyml quantize && tinyml flash (or: make train quantize flash).",
    )
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    sub.required = True

    p = sub.add_parser("audit", help=STAGES["audit"], description=STAGES["audit"])
    _add_common(p)
    p.add_argument("--allow-leakage", action="store_true", help="do not fail on error-level findings (recorded in audit.json)")

    p = sub.add_parser("train", help=STAGES["train"], description=STAGES["train"])
    _add_common(p)
    p.add_argument("--allow-leakage", action="store_true", help="train even if the audit finds an error (recorded in the reports)")

    p = sub.add_parser("quantize", help=STAGES["quantize"], description=STAGES["quantize"])
    _add_common(p)
    p.add_argument("--board", help="board profile to budget against (default from [quantize] board)")
    p.add_argument("--accept-drop", action="store_true",
                   help="export even if int8 misses an accuracy gate; recorded as an override in every report")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight quantization (default per-channel)")

    p = sub.add_parser("compile", help=STAGES["compile"], description=STAGES["compile"])
    p.add_argument("--run", metavar="DIR", default="models", help="run directory holding int8.tflite (default: models)")
    p.add_argument("--model", metavar="FILE", help="a .tflite to compile instead of RUN/int8.tflite")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/firmware/compiled)")

    p = sub.add_parser("flash", help=STAGES["flash"], description=STAGES["flash"])
    _add_common(p)
    p.add_argument("--device", default=None, metavar="emu|qemu|auto|PORT",
                   help="emu (virtual device, default), qemu (the firmware on an emulated Cortex-M4), auto (detect a board), or a port path/URL")
    p.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    p.add_argument("--no-eval", action="store_true", help="flash only, skip the on-device evaluation")

    p = sub.add_parser("eval", help=STAGES["eval"], description=STAGES["eval"])
    _add_common(p)
    p.add_argument("--device", default=None, metavar="emu|qemu|auto|PORT",
                   help="emu (boot the flashed virtual device), qemu (boot RUN/device/qemu/fw.elf), auto, or a port path/URL")
    p.add_argument("--restart", action="store_true", help="discard device_eval.jsonl and start over (default: resume)")

    p = sub.add_parser("report", help=STAGES["report"], description=STAGES["report"])
    p.add_argument("--run", metavar="DIR", default="models", help="run directory (default: models)")

    p = sub.add_parser("emulate", help=STAGES["emulate"], description=STAGES["emulate"])
    _firmware_cli().add_emulate_arguments(p)

    p = sub.add_parser("monitor", help=STAGES["monitor"], description=STAGES["monitor"])
    _firmware_cli().add_monitor_arguments(p)
    p.add_argument("--run", metavar="DIR", default="models",
                   help="with PORT emu: boot the virtual device flashed to DIR/device/flash, its sensor playing the test recordings")

    sub.add_parser("ports", help=STAGES["ports"], description=STAGES["ports"])

    p = sub.add_parser("capture", help=STAGES["capture"], description=STAGES["capture"])
    _firmware_cli().add_capture_arguments(p)
    return parser


def _firmware_cli():
    from firmware_bridge import cli

    return cli


# Stages after train start from the run's own effective config, so `tinyml quantize --run X`
# does what the train stage of X did without repeating its flags.
FOLLOWING_STAGES = ("quantize", "flash", "eval")


def load_cfg(args):
    from pipeline.core.config import load_config

    path = args.config
    saved = Path(getattr(args, "run", "models")) / "config.toml"
    if path is None and args.command in FOLLOWING_STAGES and saved.is_file():
        path = saved
    if path is None and getattr(args, "fast", False):
        path = FAST_CONFIG
    overrides = {"seed": args.seed, "data.dataset": args.dataset}
    if getattr(args, "board", None):
        overrides["quantize.board"] = args.board
    if getattr(args, "accept_drop", False):
        overrides["quantize.accept_drop"] = True
    if getattr(args, "per_tensor", False):
        overrides["quantize.per_channel"] = False
    if getattr(args, "device", None):
        overrides["device.port"] = args.device
    cfg = load_config(path, overrides)
    from pipeline.data.load import EMBEDDED

    dataset = Path(cfg.data.dataset)
    if cfg.data.dataset not in EMBEDDED and dataset.exists():
        # Saved absolute, so the run's config.toml finds the data from any directory.
        cfg.data.dataset = str(dataset.resolve())
    return cfg


def _run_dir(args) -> Path:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    return run


def cmd_audit(args) -> int:
    from pipeline.audit.stage import audit_stage
    from pipeline.core.config import save_config

    cfg, run = load_cfg(args), _run_dir(args)
    save_config(cfg, run)
    with _report_after(run):
        audit_stage(cfg, run, allow_leakage=args.allow_leakage)
    return 0


def cmd_train(args) -> int:
    from pipeline.train.stage import train

    cfg, run = load_cfg(args), _run_dir(args)
    with _report_after(run):
        train(cfg, run, allow_leakage=args.allow_leakage)
    return 0


def cmd_quantize(args) -> int:
    from pipeline.core.config import save_config
    from pipeline.quantize.stage import quantize

    cfg, run = load_cfg(args), _run_dir(args)
    with _report_after(run):
        quantize(cfg, run)
        save_config(cfg, run)  # the board and weight options this run was quantized with
    # After the gates: the model as C. A model the compiler cannot take is reported, and
    # the TFLM path (already exported) goes on working.
    from firmware_bridge.compiler import COMPILED_DIR, CompileError

    try:
        compile_run(run)
    except CompileError as exc:
        import shutil

        shutil.rmtree(run / COMPILED_DIR, ignore_errors=True)  # an earlier model's C would be stale
        print(f"compile: skipped, {exc.message} (the board sketch needs [device] engine = \"tflm\")",
              file=sys.stderr)
    return 0


def compile_run(run: Path, model: Path | None = None, out: Path | None = None) -> None:
    """`tinyml compile`: RUN/int8.tflite -> RUN/firmware/compiled/, figures printed."""
    from firmware_bridge.compiler import COMPILED_DIR, compile_model

    model = model if model is not None else _require(run, "int8.tflite", "quantize")
    out = out if out is not None else run / COMPILED_DIR
    c = compile_model(model, out)
    print(f"compile: {out} ({len(c.files)} files): RAM {c.ram_bytes} bytes in one static buffer "
          f"(lower bound {c.lower_bound_bytes}), input {c.input_bytes} B, output {c.output_bytes} B")


def cmd_compile(args) -> int:
    compile_run(Path(args.run), Path(args.model) if args.model else None,
                Path(args.out) if args.out else None)
    return 0


class _report_after:
    """Refresh report.html at the end of a stage, passed or failed: it shows what exists
    so far, including the figures of a failed gate."""

    def __init__(self, run: Path):
        self.run = run

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if (self.run / "splits.json").exists() and exc_type is not KeyboardInterrupt:
            _refresh_report(self.run)
        return False


def cmd_flash(args) -> int:
    cfg, run = load_cfg(args), _run_dir(args)
    if args.dry_run:
        return flash(cfg, run, dry_run=True, evaluate=not args.no_eval)
    with _report_after(run):
        return flash(cfg, run, evaluate=not args.no_eval)


def cmd_eval(args) -> int:
    cfg, run = load_cfg(args), _run_dir(args)
    with _report_after(run):
        return evaluate_on_device(cfg, run, restart=args.restart)


# --------------------------------------------------------------------------------------
# flash and eval: where the host pipeline and the device bridge meet. The pipeline side
# provides the test windows, the host int8 reference and the scoring; the bridge side
# talks to the device and writes what it said.
# --------------------------------------------------------------------------------------

FLASH_DIR = Path("device") / "flash"


def _require(run: Path, name: str, stage: str) -> Path:
    from pipeline.core.errors import PipelineError

    path = run / name
    if not path.exists():
        raise PipelineError(f"{path}: not found", hint=f"run `tinyml {stage}` (make {stage}) first")
    return path


def write_flash_image(cfg, run: Path, prepared=None) -> Path:
    """The virtual device's flash, written from the exported C sources (so the export is
    what gets tested), plus recordings of the test split for its sensor playback."""
    import numpy as np

    from pipeline.core.artifacts import sha256_bytes, write_bytes, write_json
    from pipeline.core.errors import GateFailed
    from pipeline.tflite.export import parse_model_data_cc, parse_model_settings_h

    cc = _require(run, "firmware/model_data.cc", "quantize")
    h = _require(run, "firmware/model_settings.h", "quantize")
    model = parse_model_data_cc(cc.read_text(encoding="utf-8"), str(cc))
    settings = parse_model_settings_h(h.read_text(encoding="utf-8"), str(h))
    tflite = _require(run, "int8.tflite", "quantize").read_bytes()
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
    sensor = flash_dir / "sensor.npz"
    from pipeline.data.splits import load_run_split

    prepared = prepared or load_run_split(cfg, run)
    ds = prepared.dataset
    if ds.kind == "timeseries" and not ds.windowed and ds.rate_hz:
        idx = prepared.plan.indices["test"]
        n = min(ds.samples[i].shape[0] for i in idx)
        X = np.stack([ds.samples[i][:n] for i in idx]).astype(np.float32)
        from pipeline.core.artifacts import atomic_path

        with atomic_path(sensor) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, X=X, rate_hz=np.float64(ds.rate_hz))
    elif sensor.exists():
        sensor.unlink()
    return flash_dir


def _boot_virtual_device(cfg, run: Path):
    from firmware_bridge.targets.virtual_device import VirtualDevice

    flash_dir = run / FLASH_DIR
    sensor = flash_dir / "sensor.npz"
    device = VirtualDevice.from_flash_dir(
        flash_dir, chunk_size=cfg.device.chunk_size, baud=cfg.device.baud,
        throttle=cfg.device.throttle, sensor=sensor if sensor.exists() else None,
    )
    return device.start()


def _verify_model(client, want: str, labels: list[str] | None = None, input_size: int | None = None) -> dict:
    """The device must run exactly int8.tflite (SHA-256 ``want``), with the model's labels in
    its order and its input size: compare what the device reports, before any scoring."""
    from pipeline.core.errors import GateFailed

    info = client.model_info()
    if info is None:
        return {"sha256_verified": False, "note": "the device does not answer AT+MODELINFO? (a stock firmware?); "
                "its labels are checked, in order, on every reply"}
    if info.sha256 != want:
        raise GateFailed(
            f"the device runs model {info.sha256[:12]}, int8.tflite is {want[:12]}",
            hint="flash the device again (tinyml flash)",
        )
    if labels is not None and list(info.labels) != list(labels):
        raise GateFailed(
            f"the device's labels are {info.labels}, the model's are {list(labels)} (order included: "
            "a device scores by output position)",
            hint="flash the device again (tinyml flash) with this run's model_settings.h",
        )
    if input_size is not None and info.input_size != input_size:
        raise GateFailed(
            f"the device's model takes {info.input_size} values (input shape {list(info.input_shape)}), "
            f"the test windows have {input_size}",
            hint="flash the device again (tinyml flash)",
        )
    return {"sha256_verified": True, "sha256": want, "input_shape": list(info.input_shape),
            "labels": info.labels, "labels_verified": labels is not None,
            "input_size_verified": input_size is not None}


def _device_identity(client, info: dict) -> dict:
    """What resumed results are keyed by, beside the model: the kind of port and the device."""
    port = str(info["port"])
    port_type = "virtual" if info["virtual"] else (port.split("://", 1)[0] if "://" in port else "serial")
    return {"port_type": port_type, "device_id": client.config.device_id, "device_type": client.config.device_type}


def _model_sha256(run: Path) -> str:
    """SHA-256 of int8.tflite, which must be the model quantize_report.json describes."""
    from pipeline.core.artifacts import read_json, sha256_file
    from pipeline.core.errors import PipelineError

    model = _require(run, "int8.tflite", "quantize")
    sha = sha256_file(model)
    report = read_json(_require(run, "quantize_report.json", "quantize"), "the quantize report")
    want = report.get("model_sha256") if isinstance(report, dict) else None
    if sha != want:
        raise PipelineError(
            f"{model}: SHA-256 {sha[:12]} is not the model quantize_report.json describes "
            f"({want[:12] if isinstance(want, str) else want!r})",
            hint="the model was replaced or the quantize stage was cut short: run `tinyml quantize` again",
        )
    return sha


def flash(cfg, run: Path, dry_run: bool = False, evaluate: bool = True) -> int:
    from firmware_bridge.targets.arduino import flash_real_board
    from firmware_bridge.targets.sketch import generate_sketch

    _require(run, "int8.tflite", "quantize")
    target = cfg.device.port
    if dry_run:
        print(f"would generate the Arduino sketch in {run / 'firmware'}")
        if target == "emu":
            print(f"would write the virtual device's flash image to {run / FLASH_DIR} from firmware/model_data.cc "
                  "and firmware/model_settings.h, boot it and check the SHA-256 it reports")
        elif target == "qemu":
            from firmware_bridge.targets import qemu

            print(f"would build {run / qemu.BUILD_DIR / qemu.ELF_NAME} (if its inputs changed) and boot it in "
                  f"qemu-system-arm -M {qemu.MACHINE}, and check the SHA-256 it reports")
        else:
            from firmware_bridge.targets import arduino
            from pipeline.core.boards import get_board

            fqbn = arduino.board_fqbn(get_board(cfg.quantize.board))
            port = arduino.PORT_PLACEHOLDER if target == "auto" else target
            print("would run:\n" + arduino.format_commands(
                arduino.arduino_commands(run / "firmware" / "tinyml_device", fqbn, port,
                                         engine=cfg.device.engine)))
        if evaluate:
            print("would stream the test split to the device (tinyml eval)")
        return 0
    _model_sha256(run)
    sketch = generate_sketch(run, engine=cfg.device.engine)
    print(f"flash: Arduino sketch in {sketch} (engine: {cfg.device.engine})")
    from pipeline.data.splits import load_run_split

    prepared = load_run_split(cfg, run)  # once, for the sensor recordings and the test windows
    if target == "emu":
        flash_dir = write_flash_image(cfg, run, prepared)
        print(f"flash: virtual device image in {flash_dir} (model parsed back from firmware/model_data.cc)")
    elif target == "qemu":
        _build_qemu_image(run, announce=True)
    else:
        flash_real_board(sketch, cfg.quantize.board, target, dry_run=False)
    if not evaluate:
        return _check_flashed(cfg, run, prepared)
    return evaluate_on_device(cfg, run, prepared=prepared)


def _check_flashed(cfg, run: Path, prepared) -> int:
    test = prepared.windows["test"]
    with _connected(cfg, run) as (client, _):
        info = _verify_model(client, _model_sha256(run), prepared.manifest["dataset"]["label_names"],
                             int(test.X[0].size) if len(test) else None)
    print(f"flash: the device reports model {info.get('sha256', '?')[:12]}: "
          + ("matches int8.tflite" if info.get("sha256_verified") else info.get("note", "")))
    return 0


def _build_qemu_image(run: Path, announce: bool = False):
    """RUN/device/qemu/fw.elf for QEMU's mps2-an386, rebuilt only when its inputs changed."""
    from firmware_bridge.targets import qemu

    image = qemu.build_firmware(run)
    if announce or image.rebuilt:
        print(f"flash: {image.elf} ({'built' if image.rebuilt else 'up to date'}): flash {image.flash_bytes:,} B "
              f"(text + data), static RAM {image.static_ram_bytes:,} B (data + bss), for qemu-system-arm -M {qemu.MACHINE}")
    return image


class _connected:
    """A connected client: to the virtual device booted from the flash image, to the
    firmware booted in QEMU, or a port."""

    def __init__(self, cfg, run: Path):
        self.cfg, self.run, self.virtual, self.board, self.image = cfg, run, None, None, None

    def __enter__(self):
        from firmware_bridge.host.client import Device
        from firmware_bridge.host.ports import detect_port

        target = self.cfg.device.port
        if target == "emu":
            _require(self.run, str(FLASH_DIR / "model.tflite"), "flash")
            self.virtual = _boot_virtual_device(self.cfg, self.run)
            port = self.virtual.port
        elif target == "qemu":
            from firmware_bridge.targets.qemu import QemuBoard

            self.image = _build_qemu_image(self.run)
            self.board = QemuBoard(self.image.elf).start()
            port = self.board.port
        else:
            port = detect_port() if target == "auto" else target
        self.port = port
        try:
            self.client = Device(port, baud=self.cfg.device.baud, timeout=self.cfg.device.timeout_s)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.client, {"port": port, "virtual": self.virtual is not None,
                             **({"emulator": f"qemu-system-arm -M {self.board.command[2]} -icount shift=0"}
                                if self.board else {})}

    def reconnect(self):
        """A fresh client on the same port (after the device reset or stopped answering)."""
        from firmware_bridge.host.client import Device

        self.client.close()
        self.client = Device(self.port, baud=self.cfg.device.baud, timeout=self.cfg.device.timeout_s)
        return self.client

    def __exit__(self, *exc):
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.virtual is not None:
            self.virtual.stop()
        if self.board is not None:
            self.board.stop()
        return False


def host_int8_probabilities(run: Path, X):
    """The host TFLM interpreter on the same windows, inputs quantized as the firmware does."""
    from pipeline.core.artifacts import read_json
    from pipeline.tflite.runtime import TFLMRunner, dequantize_int8, model_input, read_input_normalization

    data = (run / "int8.tflite").read_bytes()
    memory = read_json(run / "quantize_report.json", "the quantize report").get("memory", {})
    runner = TFLMRunner(data, max(int(memory.get("arena_bytes_exported") or 0), 1 << 20))
    qi, qo = runner.input_details["quantization_parameters"], runner.output_details["quantization_parameters"]
    if not len(qi["scales"]) or not len(qo["scales"]):
        from pipeline.core.errors import PipelineError

        raise PipelineError(f"{run / 'int8.tflite'}: not an int8 model (its input or output has no quantization)",
                            hint="run `tinyml quantize`: flash and eval take its full-integer model")
    x_q = model_input(X, float(qi["scales"][0]), int(qi["zero_points"][0]), read_input_normalization(data))
    out = runner.predict(x_q, desc="host TFLM")
    return dequantize_int8(out, float(qo["scales"][0]), int(qo["zero_points"][0]))


def evaluate_on_device(cfg, run: Path, restart: bool = False, prepared=None) -> int:
    """Stream the test split to the device, resumably; score it; compare with host int8."""
    from firmware_bridge.host.streaming import stream_windows, stream_windows_resuming
    from pipeline.device import scoring as device_eval
    from pipeline.core.artifacts import read_json
    from pipeline.core.ledger import record_test_look
    from pipeline.core.progress import progress
    from pipeline.data.splits import cv_groups, load_run_split

    model_sha = _model_sha256(run)  # int8.tflite, and the one the quantize report describes
    prepared = prepared or load_run_split(cfg, run)
    manifest, test = prepared.manifest, prepared.windows["test"]
    labels = manifest["dataset"]["label_names"]
    results = run / device_eval.RESULTS
    earlier, torn_before = device_eval.read_results(results)  # an edited line stops here, named
    input_size = int(test.X[0].size) if len(test) else None
    connection = _connected(cfg, run)
    with connection as (client, info):
        model = _verify_model(client, model_sha, labels, input_size)
        identity = _device_identity(client, info)
        # Results are resumed only from this model on this device (port type, id and type).
        stale = [r for r in earlier if r.get("model_sha256") != model_sha or r.get("device") != identity]
        if stale and not restart:
            other = stale[0]
            what = (f"another model ({(other.get('model_sha256') or 'unknown')[:12]})"
                    if other.get("model_sha256") != model_sha else f"another device ({other.get('device')})")
            print(f"eval: {results.name} holds results of {what}; starting over")
        if (restart or stale) and results.exists():
            results.unlink()
        emulated = connection.board is not None
        kind = "virtual device" if info["virtual"] else "firmware on QEMU's emulated Cortex-M4" if emulated else "device"
        print(f"eval: streaming {len(test)} test windows to {info['port']} ({kind}), resuming from {results.name}")
        stream_args = (test.X, test.window_ids, [labels[i] for i in test.y], results)
        show = lambda it, total: progress(it, "device", total=total, unit="window")  # noqa: E731
        checks = {"label_names": list(labels), "device_identity": identity,
                  "strict_order": not model.get("sha256_verified", False)}
        if emulated:
            # A reset or a fault of the firmware: reconnect and resume, each window once.
            def reconnect():
                fresh = connection.reconnect()
                _verify_model(fresh, model_sha, labels, input_size)
                return fresh

            stats, client = stream_windows_resuming(client, reconnect, *stream_args, progress=show,
                                                    model_sha256=model_sha, **checks)
            measured = _qemu_measurements(run, connection.image, client, test.X[0])
        else:
            stats = stream_windows(client, *stream_args, progress=show, model_sha256=model_sha, **checks)
        device_type = client.config.device_type
    records, torn = device_eval.read_results(results)
    host = host_int8_probabilities(run, test.X)
    clusters = cv_groups(test, prepared.plan)  # intervals resample what the split kept whole
    report = device_eval.build_device_report(
        records, test.window_ids, test.y, clusters, labels, host,
        device_info={**info, **model,
                     "device_type": device_type, "identity": identity,
                     "timing_note": "the virtual device reports the board profile's estimate "
                                    "(MACs x cycles/MAC / clock), not a measurement" if info["virtual"]
                                    else QEMU_TIMING_NOTE if emulated
                                    else "as measured and reported by the device"},
        throughput={**stats.as_dict(), "torn_lines_dropped": torn_before + torn},
        require_exact=info["virtual"] or emulated,
        output_quantization=_output_quantization(client) if emulated else None,
        unit=prepared.cluster_word,
    )
    override = (read_json(run / "quantize_report.json", "the quantize report") or {}).get("override")
    if override:  # first in the device report too: the model on the device missed a gate
        report = {"override": override, **report}
        print("eval: OVERRIDE: this model was exported with --accept-drop although it missed "
              + ", ".join(override.get("failed_gates", [])))
    if emulated:
        report["measured_on_emulated_cortex_m4"] = measured
    entry = record_test_look(run, "flash", "on-device evaluation", model_sha,
                             report["metrics"], manifest.get("test_sha256"))
    report["ledger"] = {"look": entry["look"], "warning": entry.get("warning")}
    device_eval.write_device_report(run, report)
    print(device_eval.comparison_table(run, report))
    if emulated:
        print(_qemu_summary(measured))
    device_eval.check_agreement(report)
    return 0


QEMU_TIMING_NOTE = ("virtual time of QEMU's -icount shift=0 (1 ms = 1,000,000 instructions): an instruction "
                    "count, not a latency; see measured_on_emulated_cortex_m4")


def _output_quantization(client) -> tuple[float, int]:
    fields = client.model_info().fields
    return float(fields["output scale"]), int(fields["output zero point"])


def _qemu_measurements(run: Path, image, client, window) -> dict:
    """Flash and RAM of the ELF, the stack's high-water mark and instructions per inference
    read back from the firmware, with the MAC-based estimate beside them."""
    from firmware_bridge.targets import qemu
    from pipeline.core.artifacts import read_json

    profile = qemu.read_profile(client)
    if profile["inferences"] == 0:  # every window was resumed: this boot has run none yet
        client.classify(window)
        profile = qemu.read_profile(client)
    macs = read_json(run / "quantize_report.json", "the quantize report").get("macs", {}).get("total")
    return qemu.measured_figures(image, profile, macs)


def _qemu_summary(m: dict) -> str:
    from pipeline.core.boards import CYCLES_PER_MAC_OPTIMIZED, CYCLES_PER_MAC_REFERENCE

    est = m.get("mac_estimate", {})
    line = (f"measured on an emulated Cortex-M4 ({m['machine']}): flash {m['flash_bytes_text_plus_data']:,} B, "
            f"static RAM {m['static_ram_bytes_data_plus_bss']:,} B, stack high-water {m['stack_high_water_bytes']:,} B "
            f"of {m['stack_size_bytes']:,}, {m['instructions_per_inference']:,} instructions per inference")
    if est:
        line += (f"\nestimated from {est['macs']:,} MACs: {est['estimated_cycles_reference_kernels']:,} cycles with "
                 f"reference kernels ({CYCLES_PER_MAC_REFERENCE:g} cycles/MAC), "
                 f"{est['estimated_cycles_optimized_kernels']:,} optimized ({CYCLES_PER_MAC_OPTIMIZED:g}); measured {est['measured_instructions_per_mac']} instructions/MAC")
    return line


def _refresh_report(run: Path) -> None:
    from pipeline.report.document import refresh_report

    refresh_report(run)


def cmd_report(args) -> int:
    from pipeline.report.document import build_report

    build_report(_run_dir(args))
    return 0


def cmd_emulate(args) -> int:
    return _firmware_cli().run_emulate(args)


def cmd_monitor(args) -> int:
    if args.port != "emu":
        return _firmware_cli().run_monitor(args)
    from pipeline.core.config import Config

    cfg = Config()
    run = Path(args.run)
    _require(run, str(FLASH_DIR / "model.tflite"), "flash")
    device = _boot_virtual_device(cfg, run)
    try:
        args.port = device.port
        print(f"monitor: virtual device on {device.port}, sensor playing back the test recordings")
        return _firmware_cli().run_monitor(args)
    finally:
        device.stop()


def cmd_capture(args) -> int:
    return _firmware_cli().run_capture(args)


def cmd_ports(args) -> int:
    return _firmware_cli().run_ports(args)


def _print_error(exc: BaseException) -> int:
    message = getattr(exc, "message", None) or str(exc)
    print(f"error: {message}", file=sys.stderr)
    hint = getattr(exc, "hint", None)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return int(getattr(exc, "exit_code", 2))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = globals()[f"cmd_{args.command}"]
    from pipeline.core.errors import PipelineError

    try:
        if args.command in ("train", "quantize"):
            from pipeline.core.progress import import_tensorflow

            import_tensorflow()
        return int(handler(args) or 0)
    except PipelineError as exc:  # firmware_bridge's BridgeError is one too
        return _print_error(exc)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("pipeline", "firmware_bridge"):
            print(f"error: stage '{args.command}' is not built yet ({exc.name} is missing)", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
