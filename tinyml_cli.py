"""`tinyml`: the one command that composes the host pipeline and the device bridge.

Stages import their heavy libraries (TensorFlow, LiteRT, TFLM) only when they run, so
`tinyml --help`, `tinyml ports` and `tinyml monitor` start in about a second.
Errors print one line and a hint; exit 2 for bad input or usage, 1 for a failed check.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

STAGES = {
    "audit": "split the data and audit it for leakage and defects (writes splits.json, audit.json)",
    "train": "audit, baselines, sanity checks, random search, float model (writes float.keras)",
    "quantize": "full-int8 TFLite, checked against float and TFLM, budgeted, exported as C",
    "compile": "the int8 model as plain C, byte-identical to TFLM (writes firmware/compiled/)",
    "profile": "the compiled model on the emulated Cortex-M4, layer by layer (writes profile.json)",
    "flash": "put the int8 model on a device (virtual by default) and evaluate it there",
    "eval": "stream the test split to a device over serial and score what comes back",
    "report": "one page a person can read (report.html, report.md)",
    "emulate": "run the firmware (host board, or QEMU with --device qemu) on a pseudo-terminal until stopped",
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
    p.add_argument("--strict", action="store_true", help="refuse what would be repaired (sets [split] strict)")

    p = sub.add_parser("train", help=STAGES["train"], description=STAGES["train"])
    _add_common(p)
    p.add_argument("--allow-leakage", action="store_true", help="train even if the audit finds an error (recorded in the reports)")
    p.add_argument("--strict", action="store_true", help="refuse what would be repaired (sets [split] strict)")

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

    p = sub.add_parser("profile", help=STAGES["profile"], description=STAGES["profile"])
    p.add_argument("--run", metavar="DIR", default="models", help="run directory (default: models)")
    p.add_argument("--model", metavar="FILE", help="a .tflite to profile instead of RUN/int8.tflite")
    p.add_argument("--device", default="qemu", choices=["qemu"], help="where to run it (default: qemu)")

    p = sub.add_parser("flash", help=STAGES["flash"], description=STAGES["flash"])
    _add_common(p)
    p.add_argument("--device", default=None, metavar="emu|qemu|auto|PORT",
                   help="emu (the host board: the firmware built for this computer, default), qemu (the firmware on an emulated Cortex-M4), auto (detect a board), or a port path/URL")
    p.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    p.add_argument("--no-eval", action="store_true", help="flash only, skip the on-device evaluation")

    p = sub.add_parser("eval", help=STAGES["eval"], description=STAGES["eval"])
    _add_common(p)
    p.add_argument("--device", default=None, metavar="emu|qemu|auto|PORT",
                   help="emu (boot the host board: the firmware built for this computer), qemu (boot RUN/device/qemu/fw.elf), auto, or a port path/URL")
    p.add_argument("--restart", action="store_true", help="discard device_eval.jsonl and start over (default: resume)")

    p = sub.add_parser("report", help=STAGES["report"], description=STAGES["report"])
    p.add_argument("--run", metavar="DIR", default="models", help="run directory (default: models)")

    p = sub.add_parser("emulate", help=STAGES["emulate"], description=STAGES["emulate"])
    _firmware_cli().add_emulate_arguments(p)

    p = sub.add_parser("monitor", help=STAGES["monitor"], description=STAGES["monitor"])
    _firmware_cli().add_monitor_arguments(p)
    p.add_argument("--run", metavar="DIR", default="models",
                   help="with PORT emu: boot the host board of DIR (the firmware built with g++), its sensor playing the test recordings")

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
    if getattr(args, "strict", False):
        overrides["split.strict"] = True
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


# The stage modules, each called the one way: ``module.run(cfg, run_dir, *, out, **options)``
# returning a ``pipeline.core.stage.StageResult``. They are imported when a stage runs (so
# TensorFlow and the other heavy libraries stay out of `tinyml --help`).
STAGE_MODULES = {
    "audit": "pipeline.audit.stage",
    "train": "pipeline.train.stage",
    "quantize": "pipeline.quantize.stage",
    "flash": "pipeline.device.stage",
    "eval": "pipeline.device.stage",
    "report": "pipeline.report.document",
}


def stage(name: str):
    """The module of stage ``name`` (lazy import, for start-up speed)."""
    import importlib

    return importlib.import_module(STAGE_MODULES[name])


@contextlib.contextmanager
def _report_after(run: Path):
    """Refresh report.html at the end of a stage, passed or failed (not interrupted): it shows
    what exists so far, including the figures of a failed gate."""
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if not interrupted and (run / "splits.json").exists():
            stage("report").refresh_report(run)


def cmd_audit(args) -> int:
    from pipeline.core.config import save_config

    cfg, run = load_cfg(args), _run_dir(args)
    save_config(cfg, run)
    with _report_after(run):
        return stage("audit").run(cfg, run, out=print, allow_leakage=args.allow_leakage).exit_code


def cmd_train(args) -> int:
    cfg, run = load_cfg(args), _run_dir(args)
    with _report_after(run):
        # The audit first, on the split train then uses: train reuses what it prepared.
        audited = stage("audit").run(cfg, run, out=print, allow_leakage=args.allow_leakage)
        return stage("train").run(cfg, run, out=print, allow_leakage=args.allow_leakage,
                                  prepared=audited.reuse["prepared"], audit_report=audited.report).exit_code


def cmd_quantize(args) -> int:
    from pipeline.core.config import save_config

    cfg, run = load_cfg(args), _run_dir(args)
    with _report_after(run):
        code = stage("quantize").run(cfg, run, out=print).exit_code
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
    return code


def compile_run(run: Path, model: Path | None = None, out: Path | None = None) -> None:
    """`tinyml compile`: RUN/int8.tflite -> RUN/firmware/compiled/, figures printed."""
    from firmware_bridge.compiler import COMPILED_DIR, compile_model
    from firmware_bridge.compiler.modes import run_options

    model = model if model is not None else run / "int8.tflite"
    if not model.exists():
        from pipeline.core.errors import PipelineError

        raise PipelineError(f"{model}: not found", hint="run `tinyml quantize` (make quantize) first")
    out = out if out is not None else run / COMPILED_DIR
    memory, budget = run_options(run)
    c = compile_model(model, out, memory=memory, budget=budget)
    print(f"compile: {out} ({len(c.files)} files): RAM {c.ram_bytes} bytes in one static buffer, input "
          f"({c.input_bytes} B) and output ({c.output_bytes} B) included (lower bound {c.lower_bound_bytes})")
    print(f"compile: the {c.memory} plan: {c.memory_reason}")


def cmd_compile(args) -> int:
    compile_run(Path(args.run), Path(args.model) if args.model else None,
                Path(args.out) if args.out else None)
    return 0


def cmd_profile(args) -> int:
    from firmware_bridge.targets import profile

    profile.run(args.run, model=args.model, device=args.device)
    return 0


def cmd_flash(args) -> int:
    cfg, run = load_cfg(args), _run_dir(args)
    with contextlib.nullcontext() if args.dry_run else _report_after(run):  # a dry run changes nothing
        return stage("flash").run(cfg, run, out=print, flash=True, evaluate=not args.no_eval,
                                  dry_run=args.dry_run).exit_code


def cmd_eval(args) -> int:
    cfg, run = load_cfg(args), _run_dir(args)
    with _report_after(run):
        return stage("eval").run(cfg, run, out=print, flash=False, restart=args.restart).exit_code


def cmd_report(args) -> int:
    return stage("report").run(None, _run_dir(args), out=print).exit_code


def cmd_emulate(args) -> int:
    return _firmware_cli().run_emulate(args)


def cmd_monitor(args) -> int:
    if args.port != "emu":
        return _firmware_cli().run_monitor(args)
    from pipeline.core.config import Config
    from pipeline.device import (
        connect,  # the host board alone, not the whole stage: a quick start
    )

    run = Path(args.run)
    connect.require(run, str(connect.FLASH_DIR / "model.tflite"), "flash")
    device = connect.boot_host_board(Config(), run)
    try:
        args.port = device.port
        print(f"monitor: host board on {device.port}, sensor playing back the test recordings")
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
