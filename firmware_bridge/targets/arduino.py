"""Flashing a real board with arduino-cli: the exact commands, run or printed.

``flash_real_board`` builds the commands that install the board core and the libraries the
sketch needs, compile it for the board profile's FQBN and upload it. With arduino-cli on
the PATH it runs them; without it, it stops with a ``BridgeError`` (exit 2) whose message
lists them, so a person can run them where the toolchain is. ``dry_run`` prints them.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.host.ports import detect_port
from pipeline.core.boards import get_board
from pipeline.core.errors import BridgeError, PipelineError

ARDUINO_CLI = "arduino-cli"
PORT_PLACEHOLDER = "<PORT>"
FQBN_PLACEHOLDER = "<FQBN>"
PLACEHOLDERS = (PORT_PLACEHOLDER, FQBN_PLACEHOLDER)


@dataclass(frozen=True)
class Library:
    name: str
    """As the Arduino Library Manager spells it (Chirale's has a capital L in 'FLow')."""
    version: str
    why: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


# The board core of the Nano 33 BLE (Sense): "Arduino Mbed OS Nano Boards".
CORE = "arduino:mbed_nano"

# Versions the sketch was written against (their library.properties); newer ones should do.
TFLM_LIBRARY = Library(
    "Chirale_TensorFLowLite", "2.0.0",
    "TensorFlow Lite Micro for mbed and ESP32 boards (#include <Chirale_TensorFlowLite.h>)")
IMU_LIBRARY = Library(
    "Arduino_LSM9DS1", "1.1.1", "the LSM9DS1 IMU of the Nano 33 BLE Sense (Rev1)")
IMU_REV2_LIBRARY = Library(
    "Arduino_BMI270_BMM150", "1.1.1",
    "the BMI270 IMU of the Nano 33 BLE Sense Rev2 (only with TINYML_SENSE_REV2=1)")
LIBRARIES = (TFLM_LIBRARY, IMU_LIBRARY)


def find_arduino_cli() -> str | None:
    """The arduino-cli executable on the PATH, or None."""
    return shutil.which(ARDUINO_CLI)


def board_fqbn(board, fqbn: str | None = None) -> str:
    """The FQBN to build for: ``fqbn`` when given, else the board profile's."""
    if fqbn:
        if fqbn.count(":") < 2:
            raise BridgeError(f"FQBN {fqbn!r}: expected vendor:architecture:board, e.g. arduino:mbed_nano:nano33ble")
        return fqbn
    if board.fqbn is None:
        raise BridgeError(
            f"board {board.name} ({board.title}) has no Arduino FQBN in its profile",
            hint="give the board's FQBN (vendor:architecture:board) explicitly; the sketch is "
                 "written for the Nano 33 BLE Sense and may need changes for other boards")
    return board.fqbn


# The compiled engine's header: a sketch that holds it runs the model without TFLM.
COMPILED_ENGINE_HEADER = "model_compiled.h"


def sketch_libraries(sketch_dir: str | Path | None = None, engine: str | None = None) -> tuple[Library, ...]:
    """The libraries a sketch needs: TFLM's only when it runs the model on TFLM (decided by
    ``engine``, else by whether the folder holds the compiled model)."""
    if engine is None:
        engine = "compiled" if sketch_dir is not None and (Path(sketch_dir) / COMPILED_ENGINE_HEADER).is_file() \
            else "tflm"
    return LIBRARIES if engine == "tflm" else tuple(lib for lib in LIBRARIES if lib is not TFLM_LIBRARY)


def arduino_commands(sketch_dir: str | Path, fqbn: str, port: str | None,
                     cli: str = ARDUINO_CLI, engine: str | None = None) -> list[list[str]]:
    """Install the core and libraries, compile, upload: one argv per command."""
    sketch = str(sketch_dir)
    core = fqbn.rsplit(":", 1)[0]
    return [
        [cli, "core", "update-index"],
        [cli, "core", "install", core],
        [cli, "lib", "install", *(lib.spec for lib in sketch_libraries(sketch_dir, engine))],
        [cli, "compile", "--fqbn", fqbn, sketch],
        [cli, "upload", "-p", port or PORT_PLACEHOLDER, "--fqbn", fqbn, sketch],
    ]


def format_commands(commands: list[list[str]], indent: str = "  ") -> str:
    """One shell line per command, quoted as a shell needs it (placeholders left bare)."""
    return "\n".join(indent + " ".join(arg if arg in PLACEHOLDERS else shlex.quote(arg) for arg in cmd)
                     for cmd in commands)


def _resolve_port(port: str | None, required: bool) -> str | None:
    """The given port, or the detected one for None/"auto" (None when undetectable and not
    ``required``: the commands then show a placeholder)."""
    if port and port != "auto":
        return port

    try:
        return detect_port()
    except BridgeError:
        if required:
            raise
        return None


def flash_real_board(sketch_dir: str | Path, board, port: str | None, dry_run: bool,
                     run: bool = True, fqbn: str | None = None) -> list[list[str]]:
    """Compile ``sketch_dir`` for ``board`` (a pipeline.core.boards.Board or its name) and upload
    it to ``port`` (a path; None or "auto" detects it). Returns the commands.

    ``dry_run`` prints them and runs nothing; ``run=False`` only returns them. Otherwise
    they run when arduino-cli is on the PATH; when it is not, a BridgeError lists them.
    """
    if isinstance(board, str):

        try:
            board = get_board(board)
        except PipelineError as exc:
            raise BridgeError(exc.message, hint=exc.hint) from None
    sketch_dir = Path(sketch_dir)
    ino = sketch_dir / f"{sketch_dir.name}.ino"
    if not ino.is_file():
        raise BridgeError(f"{sketch_dir}: not an Arduino sketch folder (no {ino.name})",
                          hint="generate it with `tinyml flash` after `tinyml quantize`")
    target = board_fqbn(board, fqbn)
    cli = find_arduino_cli()
    resolved = _resolve_port(port, required=run and not dry_run and cli is not None)
    commands = arduino_commands(sketch_dir, target, resolved)
    if not run:
        return commands
    if dry_run:
        print(f"would flash {board.title} ({target}) on {resolved or PORT_PLACEHOLDER + ' (no board detected)'}:")
        print(format_commands(commands))
        if cli is None:
            print(f"({ARDUINO_CLI} is not on the PATH: these commands would fail here)")
        return commands
    if cli is None:
        placeholder = (f"; replace {PORT_PLACEHOLDER} with the board's port "
                       f"(`{ARDUINO_CLI} board list` or `tinyml ports`)" if resolved is None else "")
        raise BridgeError(
            f"{ARDUINO_CLI} is not on the PATH; to flash {board.title}, run:\n"
            f"{format_commands(commands)}",
            hint=f"install arduino-cli (https://arduino.github.io/arduino-cli/) and rerun, or run "
                 f"the commands above{placeholder}")
    for cmd in commands:
        _run(cmd)
    return commands


def _run(cmd: list[str]) -> None:
    """Run one arduino-cli command with its output on the terminal (a person waits on it)."""
    print("$ " + shlex.join(cmd), flush=True)
    try:
        code = subprocess.run(cmd).returncode
    except OSError as exc:
        raise BridgeError(f"cannot run {cmd[0]}: {exc}") from None
    if code != 0:
        step = cmd[1]
        hint = {
            "upload": "check the port (`tinyml ports`); double-tap the board's reset button to "
                      "enter the bootloader, then retry",
            "compile": "see the compiler output above; README.md in the sketch folder lists the "
                       "libraries and versions the sketch needs",
        }.get(step, "see the arduino-cli output above")
        raise BridgeError(f"`{shlex.join(cmd)}` failed (exit {code})", hint=hint)
