"""The firmware sketch: RUN/firmware/tinyml_device/, from the templates and the quantize outputs.

The sketch sources live in ``firmware_bridge/firmware/core/`` (the device core every board
builds) and ``firmware/boards/arduino/`` (the .ino) as plain files; nothing in them is
specific to a model. The model arrives with the quantize stage's ``model_data.h``,
``model_data.cc`` and ``model_settings.h``, which are copied in after checking that they
agree with each other (and with ``int8.tflite`` when it is there). The README names the
Arduino libraries and the arduino-cli commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from firmware_bridge.sources import ARDUINO_DIR, CORE_DIR
from firmware_bridge.targets import arduino
from pipeline.core.boards import BOARDS
from pipeline.core.errors import BridgeError, PipelineError
from pipeline.tflite.export import DspSettings, dsp_settings_h

SKETCH_NAME = "tinyml_device"

TEMPLATE_DIR = CORE_DIR  # the device core that every board builds
TEMPLATE_SOURCES = (
    f"{SKETCH_NAME}.ino",
    "at_server.h", "at_server.cpp",
    "base64_chunk.h", "base64_chunk.cpp",
    "acquisition.h", "acquisition.cpp",
    "device_commands.h", "device_commands.cpp",
    "device_io.h", "device_io.cpp",
    "model_ops.h",
    "tm_impulse.h", "tm_impulse.cpp",
    "tm_dsp.h", "tm_dsp.c",  # the [dsp] blocks, from firmware/dsp/ (pinned to no contraction by a pragma)
)
README_TEMPLATE = "README.md.in"


def _template(name: str) -> Path:
    """A sketch source: the .ino from the Arduino board folder, the rest from the device core."""
    if name.startswith("tm_dsp"):
        return CORE_DIR.parent / "dsp" / name
    return (ARDUINO_DIR if name.endswith(".ino") else CORE_DIR) / name

# Quantize output -> its name in the sketch. The .cc becomes .cpp: older arduino-cli
# versions compile only the .c, .cpp and .S files of a sketch, and would drop the model.
MODEL_FILES = {
    "model_data.h": "model_data.h",
    "model_data.cc": "model_data.cpp",
    "model_settings.h": "model_settings.h",
    "dsp_settings.h": "dsp_settings.h",  # the [dsp] block (tm_impulse.h); a raw one for runs quantized before it
}

_MODEL_DATA_H_DECLS = (
    re.compile(r"extern\s+const\s+unsigned\s+char\s+g_model_data\s*\[\s*\]\s*;"),
    re.compile(r"extern\s+const\s+unsigned\s+int\s+g_model_data_len\s*;"),
)
# One entry of kDeviceCommands in device_commands.cpp:
# {"NAME", "help", run, read, write, "WRITE_ARGS" | nullptr}
_COMMAND_RE = re.compile(
    r'\{\s*"(?P<name>[A-Z0-9_]+)",\s*"(?P<help>(?:[^"\\]|\\.)*)",\s*(?P<run>\w+),\s*'
    r'(?P<read>\w+),\s*(?P<write>\w+),\s*(?:nullptr|"(?P<args>[^"]*)")\s*\}')


def sketch_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "firmware" / SKETCH_NAME


ENGINE_HEADER = "model_engine.h"


def generate_sketch(run_dir: str | os.PathLike, engine: str = "tflm") -> Path:
    """Write RUN/firmware/tinyml_device/ (checked against the quantize outputs); its path."""
    write_sketch(run_dir, engine)
    return sketch_path(run_dir)


def write_sketch(run_dir: str | os.PathLike, engine: str = "tflm") -> list[Path]:
    """Write the sketch folder whole, replacing any earlier one; the files written.

    ``engine`` "tflm" runs the model on the TFLM library; "compiled" copies in the model
    compiled to C (RUN/firmware/compiled/, from `tinyml compile`) and needs no library."""
    run_dir = Path(run_dir)
    firmware = run_dir / "firmware"
    texts = {name: _read(firmware / name) for name in MODEL_FILES if name != "dsp_settings.h"}
    texts["dsp_settings.h"] = (_read(firmware / "dsp_settings.h") if (firmware / "dsp_settings.h").is_file()
                               else dsp_settings_h(DspSettings(block="raw", fields=[])))
    settings = check_model_files(texts, run_dir)
    files = {name: _template(name).read_text(encoding="utf-8") for name in TEMPLATE_SOURCES}
    for source, target in MODEL_FILES.items():
        files[target] = texts[source]
    files.update(engine_files(firmware, engine, settings))
    commands = command_table(files["device_commands.cpp"])
    files["README.md"] = render_readme(settings, commands, engine)
    target = sketch_path(run_dir)
    _replace_folder(target, files)
    return sorted(target / name for name in files)


# ---------------------------------------------------------------------------------------
# Checks: the three quantize outputs must describe one model
# ---------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    if not path.is_file():
        raise BridgeError(f"{path}: not found (the quantize stage writes it)",
                          hint="run `tinyml quantize` (make quantize) first")
    return path.read_text(encoding="utf-8")


def check_model_files(texts: dict[str, str], run_dir: str | os.PathLike | None = None) -> dict:
    """The settings of model_settings.h, after checking that model_data.h/.cc hold the same
    model (SHA-256), and int8.tflite too when ``run_dir`` has one. BridgeError otherwise."""
    # lazy: the exporter and the runtime load numpy and the flatbuffer reader
    from pipeline.tflite.export import parse_model_data_cc, parse_model_settings_h

    try:
        settings = parse_model_settings_h(texts["model_settings.h"])
        data = parse_model_data_cc(texts["model_data.cc"])
    except PipelineError as exc:
        raise BridgeError(exc.message, hint="run `tinyml quantize` again: the file is not what it writes") from None
    for decl in _MODEL_DATA_H_DECLS:
        if not decl.search(texts["model_data.h"]):
            raise BridgeError(f"model_data.h: no declaration matching {decl.pattern!r}",
                              hint="run `tinyml quantize` again")

    sha = hashlib.sha256(data).hexdigest()
    if not re.fullmatch(r"[0-9a-f]{64}", settings["sha256"]):
        raise BridgeError(f"model_settings.h: kModelSha256 {settings['sha256']!r}: expected 64 hex digits")
    if sha != settings["sha256"]:
        raise BridgeError(
            f"model_data.cc holds a model with SHA-256 {sha[:12]}..., model_settings.h describes "
            f"{settings['sha256'][:12]}...", hint="the files come from different quantize runs: run `tinyml quantize` again")
    if run_dir is not None:
        tflite = Path(run_dir) / "int8.tflite"
        if tflite.is_file() and hashlib.sha256(tflite.read_bytes()).hexdigest() != sha:
            raise BridgeError(f"{tflite}: not the model of firmware/model_data.cc (SHA-256 differs)",
                              hint="firmware/ is stale: run `tinyml quantize` again")

    _check_input_normalization(settings, data)

    shape = settings["input_shape"]
    if not shape or shape[0] != 1 or any(d <= 0 for d in shape):
        raise BridgeError(f"model_settings.h: kInputShape {shape}: expected a batch of 1 and positive dimensions")
    size = 1
    for d in shape[1:]:
        size *= d
    if settings["input_size"] != size:
        raise BridgeError(f"model_settings.h: kInputSize = {settings['input_size']}, but kInputShape {shape} holds {size} values")
    arena = settings["arena_bytes"]
    if arena <= 0 or arena % 16:
        raise BridgeError(f"model_settings.h: kTensorArenaSize = {arena}: expected a positive multiple of 16")
    ops = settings["ops"]
    if not ops or len(set(ops)) != len(ops):
        raise BridgeError(f"model_settings.h: TINYML_FOR_EACH_OP {ops}: expected each op once, at least one")
    if not (settings["input_scale"] > 0 and settings["output_scale"] > 0):
        raise BridgeError("model_settings.h: kInputScale and kOutputScale must be positive")
    return settings


def engine_files(firmware: Path, engine: str, settings: dict) -> dict[str, str]:
    """``model_engine.h`` (which engine the .ino builds), and for the compiled engine the
    sources of firmware/compiled/, checked to be the model of model_data.cc."""
    if engine not in ("compiled", "tflm"):
        raise BridgeError(f"[device] engine: expected \"compiled\" or \"tflm\", got {engine!r}")
    files = {}
    if engine == "compiled":
        # lazy: the compiler loads numpy and the flatbuffer reader
        from firmware_bridge.compiler import COMPILED_DIR, HEADER

        folder = firmware.parent / COMPILED_DIR
        header = folder / HEADER
        if not header.is_file():
            raise BridgeError(f"{header}: not found (the compiled engine needs the model compiled to C)",
                              hint="run `tinyml compile`, or set [device] engine = \"tflm\"")
        m = re.search(r"sha256 ([0-9a-f]{64})", header.read_text(encoding="utf-8"))
        if not m or m.group(1) != settings["sha256"]:
            raise BridgeError(f"{folder}: compiled from another model than firmware/model_data.cc",
                              hint="firmware/compiled is stale: run `tinyml compile` again")
        for path in sorted(folder.iterdir()):
            if path.suffix in (".c", ".h"):
                files[path.name] = path.read_text(encoding="utf-8")
    files[ENGINE_HEADER] = (
        "// Which engine runs the model: written by `tinyml flash` from [device] engine.\n"
        "#ifndef TINYML_MODEL_ENGINE_H_\n#define TINYML_MODEL_ENGINE_H_\n"
        f"#define TINYML_ENGINE_COMPILED {int(engine == 'compiled')}\n"
        + (f'#include "{HEADER}"\n' if engine == "compiled" else "")
        + "#endif  // TINYML_MODEL_ENGINE_H_\n")
    return files


def _check_input_normalization(settings: dict, data: bytes) -> None:
    """kInputMean/kInputInvStd must be the float step int8.tflite's metadata holds (the
    identity when it holds none): the model, whose SHA-256 is checked, is their source."""
    # lazy: the runtime loads numpy
    from pipeline.tflite.runtime import InputNormalization, read_input_normalization

    if "input_mean" not in settings:  # a header from before the float step: identity only
        settings["input_mean"] = settings["input_inv_std"] = None
    channels = settings["input_shape"][-1] if len(settings["input_shape"]) > 1 else 1
    have = (settings["input_mean"] or [0.0] * channels, settings["input_inv_std"] or [1.0] * channels)
    try:
        want = read_input_normalization(data, "model_data.cc") or InputNormalization.identity(channels)
    except PipelineError as exc:
        if InputNormalization(tuple(have[0]), tuple(have[1])).is_identity:
            return  # bytes that are not a flatbuffer cannot hold a float step; TFLM refuses them at boot
        raise BridgeError(exc.message) from None
    if settings["input_mean"] is None and not want.is_identity:
        raise BridgeError("model_settings.h: no kInputMean/kInputInvStd, but the model normalizes its input "
                          "on the device", hint="run `tinyml quantize` again")
    if (list(want.mean), list(want.inv_std)) != (list(have[0]), list(have[1])):
        raise BridgeError("model_settings.h: kInputMean/kInputInvStd differ from the model's metadata "
                          "tinyml.input_normalization", hint="run `tinyml quantize` again")


# ---------------------------------------------------------------------------------------
# The command table and the README
# ---------------------------------------------------------------------------------------


def command_table(source: str) -> list[dict]:
    """The entries of kDeviceCommands in device_commands.cpp, with the forms each supports
    (AT+HELP, the server's own, first), as AT+HELP lists them."""
    commands = [{"name": "HELP", "help": "Lists all commands", "forms": ["AT+HELP"]}]
    for m in _COMMAND_RE.finditer(source):
        forms = []
        if m["run"] != "nullptr":
            forms.append(f"AT+{m['name']}")
        if m["read"] != "nullptr":
            forms.append(f"AT+{m['name']}?")
        if m["write"] != "nullptr":
            forms.append(f"AT+{m['name']}={m['args'] or ''}")
        commands.append({"name": m["name"], "help": m["help"], "forms": forms})
    return commands


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


ENGINE_NOTES = {
    "compiled": ("the model compiled to C (`model_compiled.c`, kernels `tm_*.c`): no TFLM library, one "
                 "static buffer of `TINYML_MODEL_RAM_BYTES` instead of the arena, outputs byte-identical "
                 "to TFLM's (tested on the host). `[device] engine = \"tflm\"` builds the TFLM sketch instead."),
    "tflm": ("TensorFlow Lite Micro (the interpreter library below) with the arena above. "
             "`[device] engine = \"compiled\"` builds the model as C instead, without the library."),
}


def render_readme(settings: dict, commands: list[dict], engine: str = "tflm") -> str:
    board = BOARDS.get(settings["board"])
    fqbn = board.fqbn if board is not None and board.fqbn else arduino.FQBN_PLACEHOLDER
    title = board.title if board is not None else settings["board"]
    libraries = (*arduino.sketch_libraries(engine=engine), arduino.IMU_REV2_LIBRARY)
    rows = "\n".join(f"| `{lib.name}` | {lib.version} | {_cell(lib.why)} |" for lib in libraries)
    listing = []
    for c in commands:  # as AT+HELP prints them: the forms, then the help indented
        listing += c["forms"] + [f"    {c['help']}"]
    values = {
        "sketch_name": SKETCH_NAME,
        "board_title": title,
        "board": settings["board"],
        "sha256": settings["sha256"],
        "input_shape": json.dumps(settings["input_shape"]),
        "input_size": settings["input_size"],
        "input_scale": f"{settings['input_scale']:.9g}",
        "input_zero_point": settings["input_zero_point"],
        "output_scale": f"{settings['output_scale']:.9g}",
        "output_zero_point": settings["output_zero_point"],
        "num_classes": len(settings["labels"]),
        "labels": _cell(", ".join(settings["labels"])),
        "ops": ", ".join(settings["ops"]),
        "num_ops": len(settings["ops"]),
        "arena_bytes": settings["arena_bytes"],
        "sample_rate_hz": f"{settings['sample_rate_hz']:g}",
        "core": fqbn.rsplit(":", 1)[0] if fqbn != arduino.FQBN_PLACEHOLDER else arduino.CORE,
        "fqbn": fqbn,
        "library_rows": rows,
        "commands": arduino.format_commands(arduino.arduino_commands(".", fqbn, None, engine=engine), indent=""),
        "engine": engine,
        "engine_note": ENGINE_NOTES[engine],
        "rev2_library": arduino.IMU_REV2_LIBRARY.spec,
        "command_list": "\n".join(listing),
    }
    return Template((ARDUINO_DIR / README_TEMPLATE).read_text(encoding="utf-8")).substitute(values)


# ---------------------------------------------------------------------------------------
# Writing the folder whole
# ---------------------------------------------------------------------------------------


def _replace_folder(target: Path, files: dict[str, str]) -> None:
    """Write ``files`` into a fresh folder beside ``target`` and swap it in, so a reader
    (or arduino-cli) never sees half a sketch, nor a stale file from an earlier one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(fresh, 0o755)  # mkdtemp makes it private; a sketch folder is not secret
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    kept = old / target.name
    try:
        for name, text in files.items():
            (fresh / name).write_text(text, encoding="utf-8")
        if target.exists():
            os.replace(target, kept)
        try:
            os.replace(fresh, target)
        except OSError:
            if kept.exists():
                os.replace(kept, target)  # put the earlier sketch back
            raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
