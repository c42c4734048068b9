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
    "flash": "put the int8 model on a device (virtual by default) and evaluate it there",
    "eval": "stream the test split to a device over serial and score what comes back",
    "report": "one page a person can read (report.html, report.md)",
    "emulate": "run the virtual device on a pseudo-terminal (or a socket://) until stopped",
    "monitor": "live predictions from any Edge Impulse firmware (AT+RUNIMPULSE)",
    "ports": "list serial ports with a board guess from their USB VID:PID",
}

FAST_CONFIG = Path(__file__).resolve().parent / "pipeline" / "configs" / "fast.toml"


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
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight quantization (default per-channel)")

    p = sub.add_parser("flash", help=STAGES["flash"], description=STAGES["flash"])
    _add_common(p)
    p.add_argument("--device", default=None, metavar="emu|auto|PORT", help="emu (virtual device, default), auto (detect a board), or a port path/URL")
    p.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    p.add_argument("--no-eval", action="store_true", help="flash only, skip the on-device evaluation")

    p = sub.add_parser("eval", help=STAGES["eval"], description=STAGES["eval"])
    _add_common(p)
    p.add_argument("--device", default=None, metavar="emu|auto|PORT", help="emu (boot the flashed virtual device), auto, or a port path/URL")
    p.add_argument("--restart", action="store_true", help="discard device_eval.jsonl and start over (default: resume)")

    p = sub.add_parser("report", help=STAGES["report"], description=STAGES["report"])
    p.add_argument("--run", metavar="DIR", default="models", help="run directory (default: models)")

    p = sub.add_parser("emulate", help=STAGES["emulate"], description=STAGES["emulate"])
    p.add_argument("--run", metavar="DIR", default="models", help="boot what was flashed to DIR/device/flash")
    _firmware_cli().add_emulate_arguments(p)

    p = sub.add_parser("monitor", help=STAGES["monitor"], description=STAGES["monitor"])
    _firmware_cli().add_monitor_arguments(p)

    sub.add_parser("ports", help=STAGES["ports"], description=STAGES["ports"])
    return parser


def _firmware_cli():
    from firmware_bridge import cli

    return cli


def load_cfg(args):
    from pipeline.config import load_config

    path = args.config
    if path is None and getattr(args, "fast", False):
        path = FAST_CONFIG
    overrides = {"seed": args.seed, "data.dataset": args.dataset}
    if getattr(args, "board", None):
        overrides["quantize.board"] = args.board
    if getattr(args, "per_tensor", False):
        overrides["quantize.per_channel"] = False
    if getattr(args, "device", None):
        overrides["device.port"] = args.device
    return load_config(path, overrides)


def _run_dir(args) -> Path:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    return run


def cmd_audit(args) -> int:
    from pipeline.audit import audit_stage

    cfg = load_cfg(args)
    audit_stage(cfg, _run_dir(args), allow_leakage=args.allow_leakage)
    return 0


def cmd_train(args) -> int:
    from pipeline.train import train

    cfg = load_cfg(args)
    train(cfg, _run_dir(args), allow_leakage=args.allow_leakage)
    return 0


def cmd_quantize(args) -> int:
    from pipeline.quantize import quantize

    quantize(load_cfg(args), _run_dir(args))
    return 0


def cmd_flash(args) -> int:
    from pipeline.deploy import flash

    return flash(load_cfg(args), _run_dir(args), dry_run=args.dry_run, evaluate=not args.no_eval)


def cmd_eval(args) -> int:
    from pipeline.deploy import evaluate_on_device

    return evaluate_on_device(load_cfg(args), _run_dir(args), restart=args.restart)


def cmd_report(args) -> int:
    from pipeline.report import build_report

    build_report(_run_dir(args))
    return 0


def cmd_emulate(args) -> int:
    return _firmware_cli().run_emulate(args)


def cmd_monitor(args) -> int:
    return _firmware_cli().run_monitor(args)


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
    from pipeline.errors import PipelineError

    known: tuple[type[BaseException], ...] = (PipelineError,)
    try:
        from firmware_bridge.errors import BridgeError

        known = (PipelineError, BridgeError)
    except ImportError:
        pass
    try:
        return int(handler(args) or 0)
    except known as exc:
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
