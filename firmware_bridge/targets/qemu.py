"""The firmware on an emulated Cortex-M4F: build it for QEMU's mps2-an386, boot it on a pty.

``build_firmware(run_dir)`` compiles the board binding (firmware/boards/mps2_an386/), the
AT protocol core the Arduino sketch also runs (firmware/core/) and the model compiled to C with
the kernels it calls (RUN/firmware/compiled/, firmware_bridge/compiler/) into RUN/device/qemu/fw.elf with Debian's
arm-none-eabi-gcc, make-style: only when an input, a flag or the compiler changed.

``QemuBoard(elf)`` boots it in ``qemu-system-arm -M mps2-an386`` with ``-icount shift=0``
(one instruction is one nanosecond of virtual time, so the firmware's SysTick counts
instructions), hands back the pseudo-terminal QEMU opened for UART0, and always stops QEMU:
on leaving its ``with`` block, on an error, on Ctrl-C, and (Linux) when this process dies.
A QMP socket lets the host reset the board (``system_reset``) as a test of the firmware.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.sources import BOARDS_DIR, CORE_DIR
from firmware_bridge.targets.board_process import (
    STOP_TIMEOUT_S,
    BoardProcess,
    content_hash,
    run_tool,
)
from pipeline.core.artifacts import read_json, sha256_file, write_bytes, write_json
from pipeline.core.boards import (
    DEFAULT_BOARD,
    Board,
    get_board,
)
from pipeline.core.errors import BridgeError, PipelineError

DSP_DIR = CORE_DIR.parent / "dsp"  # the [dsp] blocks (tm_dsp.c), one source with pipeline/dsp/build.py

PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm")
INSTALL_LINE = "sudo apt-get install --no-install-recommends " + " ".join(PACKAGES)
# Each tool and the Debian package that brings it.
TOOLS = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-g++": "gcc-arm-none-eabi",
    "arm-none-eabi-size": "gcc-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
}
# newlib's C library for the hard-float Cortex-M4 multilib: without it the link fails.
NEWLIB_MARKER = "libc_nano.a"

BOARD_DIR = BOARDS_DIR / "mps2_an386"
# CORE_DIR: one source with the Arduino sketch, its every .cpp
LINKER_SCRIPT = BOARD_DIR / "mps2_an386.ld"
BUILD_DIR = Path("device") / "qemu"  # in the run directory
ELF_NAME = "fw.elf"
BUILD_RECORD = "build.json"

MACHINE = "mps2-an386"
CPU_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
# AT+RUNIMPULSESTATIC chunks of 128 characters (Edge Impulse's ESP32 value) instead of the
# Nano's 32: QEMU's CMSDK UART takes one byte per event-loop turn (30-100 us here), so a
# round trip per 32 characters is a fifth of the evaluation's time; 128 characters still
# arrive well within the protocol's 100 ms per chunk.
BOARD_DEFINES = ("-DTINYML_STATIC_CHUNK_SIZE=128",)
COMPILE_FLAGS = (*CPU_FLAGS, "-O2", "-g", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra",
                 *BOARD_DEFINES)
C_FLAGS = ("-std=c11", "-ffp-contract=off")  # no fused multiply-add: tm_dsp.c gives the host library's bits
CXX_FLAGS = ("-std=c++14", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics",
             "-fno-use-cxa-atexit")
LINK_FLAGS = (*CPU_FLAGS, "--specs=nano.specs", "-nostartfiles", "-Wl,--gc-sections")
LINK_LIBS = ("-lm", "-lc", "-lgcc")

# The sensor's place in the board's PSRAM (board.h: TINYML_SENSOR_*).
SENSOR_NAME_ADDR = 0x21000000
SENSOR_NAME_BYTES = 0x100
SENSOR_ADDR = SENSOR_NAME_ADDR + SENSOR_NAME_BYTES
SENSOR_MAX_BYTES = 0x01000000 - SENSOR_NAME_BYTES

# QEMU's announcement of the pty it opened for UART0.
PTY_RE = re.compile(r"char device redirected to (\S+) \(label serial0\)")


# ---------------------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------------------


def missing_packages() -> list[str]:
    """The Debian packages of ``PACKAGES`` whose tools are not here (empty: all present)."""
    missing = {pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None}
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        missing.add("libnewlib-arm-none-eabi")  # cannot be checked without the compiler
    else:
        probe = subprocess.run([gcc, *CPU_FLAGS, "--specs=nano.specs", f"-print-file-name={NEWLIB_MARKER}"],
                               capture_output=True, text=True)
        if probe.returncode != 0 or not os.path.isabs(probe.stdout.strip()):
            missing.add("libnewlib-arm-none-eabi")
    return [p for p in PACKAGES if p in missing]


def require_tools() -> None:
    missing = missing_packages()
    if missing:
        raise BridgeError(f"the emulated Cortex-M4 needs the Debian packages {', '.join(missing)} (not installed)",
                          hint=f"install them: {INSTALL_LINE}")


# ---------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirmwareImage:
    """A built ELF and its sizes (arm-none-eabi-size, Berkeley format)."""

    elf: Path
    text_bytes: int
    data_bytes: int
    bss_bytes: int
    rebuilt: bool
    has_model: bool

    @property
    def flash_bytes(self) -> int:
        """What the image takes in flash: code and constants, plus the initial values of .data."""
        return self.text_bytes + self.data_bytes

    @property
    def static_ram_bytes(self) -> int:
        """RAM taken before the program runs: .data and .bss (the stack is measured apart)."""
        return self.data_bytes + self.bss_bytes

    def as_dict(self) -> dict:
        return {"elf": str(self.elf), "text_bytes": self.text_bytes, "data_bytes": self.data_bytes,
                "bss_bytes": self.bss_bytes, "flash_bytes": self.flash_bytes,
                "static_ram_bytes": self.static_ram_bytes, "has_compiled_model": self.has_model}


def compiled_model_dir(run_dir: str | os.PathLike) -> Path:
    # lazy: the compiler loads numpy and the flatbuffer reader
    from firmware_bridge.compiler import COMPILED_DIR

    return Path(run_dir) / COMPILED_DIR


COMPILED_SHA_RE = re.compile(r"sha256 ([0-9a-f]{64})")


def ensure_compiled_model(run_dir: str | os.PathLike) -> Path:
    """RUN/firmware/compiled/ for RUN/int8.tflite: compiled again when missing or when it was
    compiled from another model (its header names the SHA-256 of the model it came from)."""
    from firmware_bridge.compiler import compile_model  # lazy: numpy and the flatbuffer reader
    from firmware_bridge.compiler.modes import run_options

    run_dir = Path(run_dir)
    model = run_dir / "int8.tflite"
    if not model.is_file():
        raise BridgeError(f"{model}: not found", hint="run `tinyml quantize` (make quantize) first")
    out = compiled_model_dir(run_dir)
    header = out / "model_compiled.h"
    m = COMPILED_SHA_RE.search(header.read_text(encoding="utf-8")) if header.is_file() else None
    if m is None or m.group(1) != sha256_file(model):
        memory, budget = run_options(run_dir)  # as the quantize stage compiled it
        compile_model(model, out, memory=memory, budget=budget)
    return out


def _sources(run_dir: Path, with_model: bool) -> tuple[list[Path], list[Path], list[Path]]:
    """(sources, headers and other inputs, include directories) of the image."""
    settings = run_dir / "firmware" / "model_settings.h"
    if not settings.is_file():
        raise BridgeError(f"{settings}: not found", hint="run `tinyml quantize` (make quantize) first")
    sources = sorted(BOARD_DIR.glob("*.c")) + sorted(BOARD_DIR.glob("*.cpp"))
    sources += sorted(CORE_DIR.glob("*.cpp"))  # the .ino is the Arduino board's binding
    # The [dsp] block's C99 source (the host library's, pipeline/dsp/build.py) and the run's
    # dsp_settings.h (quantize writes it beside model_settings.h; tm_impulse.h reads it).
    sources.append(DSP_DIR / "tm_dsp.c")
    includes = [BOARD_DIR, CORE_DIR, DSP_DIR, settings.parent]
    inputs = [settings, LINKER_SCRIPT, *sorted(BOARD_DIR.glob("*.h")), *sorted(CORE_DIR.glob("*.h")), DSP_DIR / "tm_dsp.h",
              *([settings.parent / "dsp_settings.h"] if (settings.parent / "dsp_settings.h").is_file() else [])]
    if with_model:
        compiled = compiled_model_dir(run_dir)
        sources += sorted(compiled.glob("*.c"))  # the model and the kernels it calls
        inputs += sorted(compiled.glob("*.h"))
        includes += [compiled]
    return sources, inputs, includes


def _compiler_identity() -> str:
    out = subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def _stamp(files: list[Path], flags: list[str]) -> str:
    return content_hash(files, flags, _compiler_identity())


def elf_sizes(elf: Path) -> tuple[int, int, int]:
    """(text, data, bss) bytes of ``elf`` as arm-none-eabi-size reports them."""
    out = run_tool(["arm-none-eabi-size", "--format=berkeley", str(elf)], "arm-none-eabi-size")
    fields = out.splitlines()[1].split()
    return int(fields[0]), int(fields[1]), int(fields[2])


def deployment_board(run_dir: str | os.PathLike, board: str | None = None) -> Board:
    """The board the run's model is for: ``board``, else the quantize report's, else the
    default (pipeline/core/boards.py). Its clock turns instructions into board time."""
    report_path = Path(run_dir) / "quantize_report.json"
    report = read_json(report_path, "the quantize report") if report_path.is_file() else {}
    name = board or (report.get("board") if isinstance(report, dict) and isinstance(report.get("board"), str)
                     else None) or DEFAULT_BOARD
    try:
        return get_board(name)
    except PipelineError:
        return get_board(DEFAULT_BOARD)


def board_defines(board: Board) -> tuple[str, ...]:
    """The deployment board's clock for the image's Timing lines (board.h)."""
    return (f"-DTINYML_BOARD_CLOCK_HZ={int(board.clock_hz)}ull",
            f'-DTINYML_BOARD_CLOCK_SOURCE="{board.name}, pipeline/core/boards.py"')


def build_firmware(run_dir: str | os.PathLike, *, with_model: bool = True, jobs: int | None = None,
                   board: str | None = None) -> FirmwareImage:
    """RUN/device/qemu/fw.elf, rebuilt only when its inputs changed.

    ``with_model=False`` builds the board and the AT core alone: the image boots and answers,
    and reports that it has no model (for bringing up a board before the model compiler).
    ``board``: the deployment board whose clock Timing lines use (default: the run's).
    """
    require_tools()
    run_dir = Path(run_dir)
    if with_model:
        ensure_compiled_model(run_dir)
    sources, inputs, includes = _sources(run_dir, with_model)
    out_dir = run_dir / BUILD_DIR
    elf = out_dir / ELF_NAME
    compile_flags = [*COMPILE_FLAGS, *board_defines(deployment_board(run_dir, board))]
    flags = [*compile_flags, *C_FLAGS, *CXX_FLAGS, *LINK_FLAGS, *LINK_LIBS]
    stamp = _stamp(sources + inputs, flags)
    record_path = out_dir / BUILD_RECORD
    if elf.is_file() and record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except ValueError:
            record = {}
        if record.get("inputs_sha256") == stamp:
            return FirmwareImage(elf, *elf_sizes(elf), rebuilt=False, has_model=with_model)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
        tmp = Path(tmp)
        include_flags = [f"-I{d}" for d in includes]

        def compile_one(index_source):
            index, source = index_source
            obj = tmp / f"{index:02d}_{source.stem}.o"
            is_cxx = source.suffix in (".cpp", ".cc")
            cmd = ["arm-none-eabi-g++" if is_cxx else "arm-none-eabi-gcc", *compile_flags,
                   *(CXX_FLAGS if is_cxx else C_FLAGS), *include_flags, "-c", str(source), "-o", str(obj)]
            run_tool(cmd, f"arm-none-eabi-gcc {source.name}")
            return obj

        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            objects = list(pool.map(compile_one, enumerate(sources)))
        tmp_elf = tmp / ELF_NAME
        run_tool(["arm-none-eabi-gcc", *LINK_FLAGS, f"-T{LINKER_SCRIPT}", f"-Wl,-Map={tmp / 'fw.map'}",
                   *map(str, objects), *LINK_LIBS, "-o", str(tmp_elf)], "linking fw.elf")
        os.replace(tmp / "fw.map", out_dir / "fw.map")
        os.replace(tmp_elf, elf)
    image = FirmwareImage(elf, *elf_sizes(elf), rebuilt=True, has_model=with_model)

    write_json(record_path, {"inputs_sha256": stamp, "compiler": _compiler_identity(), "flags": flags,
                             "sources": [str(s) for s in sources], **image.as_dict()})
    return image


# ---------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------


class QemuBoard(BoardProcess):
    """``qemu-system-arm -M mps2-an386`` running ``elf``; UART0 on a pty (``port``).

    Use as a context manager (or call ``stop``): QEMU is stopped on every way out.
    """

    def __init__(self, elf: str | os.PathLike, *, icount: bool = True, sensor: str | os.PathLike | None = None,
                 sensor_name: str | None = None):
        super().__init__()
        self.elf = Path(elf)
        self.icount = icount
        # The IMU: a recording file (host_board.write_sensor_file's) QEMU's loader puts into
        # PSRAM, its name in front of it (board.h); written beside the recording.
        self.sensor = Path(sensor) if sensor else None
        self.sensor_name = sensor_name
        self._tmp: str | None = None
        self._qmp: socket.socket | None = None
        self._qmp_buf = b""

    pty_re = PTY_RE
    merge_stderr = True

    @property
    def what(self) -> str:
        return f"qemu-system-arm -M {MACHINE}"

    @property
    def command(self) -> list[str]:
        cmd = ["qemu-system-arm", "-M", MACHINE, "-nographic", "-monitor", "none", "-serial", "pty",
               "-kernel", str(self.elf)]
        if self.icount:
            # One instruction = 1 ns of virtual time: SysTick then counts instructions.
            cmd += ["-icount", "shift=0"]
        if self.sensor:
            cmd += ["-device", f"loader,file={self.sensor},addr={SENSOR_ADDR:#x},force-raw=on",
                    "-device", f"loader,file={self._name_file},addr={SENSOR_NAME_ADDR:#x},force-raw=on"]
        if self._tmp:
            cmd += ["-qmp", f"unix:{self._qmp_path},server=on,wait=off"]
        return cmd

    @property
    def _name_file(self) -> Path:
        return self.sensor.with_name(self.sensor.name + ".name")

    def _load_sensor(self) -> None:
        """Check the recording fits PSRAM and write the IMU's name file beside it."""
        if not self.sensor.is_file():
            raise BridgeError(f"{self.sensor}: no sensor recording file")
        size = self.sensor.stat().st_size
        if size > SENSOR_MAX_BYTES:
            raise BridgeError(f"{self.sensor}: {size:,} bytes of recordings, the board's PSRAM holds "
                              f"{SENSOR_MAX_BYTES:,}", hint="name fewer recordings (--sensor FILE.npz)")
        name = (self.sensor_name or "Playback").encode("ascii", "replace")[:SENSOR_NAME_BYTES - 1]
        write_bytes(self._name_file, name + b"\0")

    @property
    def _qmp_path(self) -> str:
        return os.path.join(self._tmp, "qmp.sock")

    def start(self) -> QemuBoard:
        if shutil.which("qemu-system-arm") is None:
            require_tools()
        if not self.elf.is_file():
            raise BridgeError(f"{self.elf}: no firmware image", hint="build it with `tinyml flash --device qemu`")
        if self.sensor:
            self._load_sensor()
        self._tmp = tempfile.mkdtemp(prefix="tinyml-qemu-")
        try:
            self._spawn()
        except BaseException:
            self.stop()
            raise
        return self

    # -- QMP (QEMU's machine protocol, on a unix socket) ---------------------------------

    def _qmp_command(self, command: str, timeout: float = 5.0) -> dict:
        if self._qmp is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    sock.connect(self._qmp_path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        raise BridgeError(f"QEMU's QMP socket {self._qmp_path} did not open") from None
                    time.sleep(0.05)
            self._qmp = sock
            self._qmp_read(lambda msg: "QMP" in msg)
            self._qmp_send("qmp_capabilities")
        self._qmp_send(command)
        return self._qmp_read(lambda msg: "return" in msg or "error" in msg)

    def _qmp_send(self, command: str) -> None:
        self._qmp.sendall(json.dumps({"execute": command}).encode() + b"\r\n")
        if command == "qmp_capabilities":
            self._qmp_read(lambda msg: "return" in msg or "error" in msg)

    def _qmp_read(self, wanted) -> dict:
        while True:
            while b"\n" not in self._qmp_buf:
                data = self._qmp.recv(65536)
                if not data:
                    raise BridgeError("QEMU closed its QMP socket")
                self._qmp_buf += data
            line, self._qmp_buf = self._qmp_buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if wanted(msg):
                if "error" in msg:
                    raise BridgeError(f"QEMU refused a QMP command: {msg['error'].get('desc', msg['error'])}")
                return msg

    def reset(self) -> None:
        """Press the board's reset button (QMP ``system_reset``): the firmware reboots."""
        self._qmp_command("system_reset")

    # -- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop QEMU (politely over QMP, then SIGTERM, then SIGKILL) and clean up. Idempotent."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            try:
                if self._tmp and os.path.exists(self._qmp_path):
                    self._qmp_command("quit", timeout=1.0)
            except (OSError, ValueError, BridgeError):
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self._terminate()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def boot(run_dir: str | os.PathLike, *, sensor: str | os.PathLike | None = None, board: str | None = None,
         warn=None) -> tuple[FirmwareImage, QemuBoard]:
    """Build (if stale) and boot the image of ``run_dir`` in QEMU, its IMU playing ``sensor``
    (an .npz; default: the run's test recordings, RUN/device/flash/sensor.npz, when there are)."""
    from firmware_bridge.targets import sensor_file

    run_dir = Path(run_dir)
    image = build_firmware(run_dir, board=board)
    recording, name = sensor_file.run_sensor(run_dir, sensor, out_dir=run_dir / BUILD_DIR,
                                             max_bytes=SENSOR_MAX_BYTES, warn=warn)
    return image, QemuBoard(image.elf, sensor=recording, sensor_name=name).start()


# What only the image can measure (AT+PROFILE?), in its own module, named here too.
from firmware_bridge.targets.qemu_profile import (  # noqa: E402
    INSTRUCTIONS_PER_TICK,
    PROFILE_COMMAND,
    PROFILE_RECORD,
    SYSCLK_HZ,
    measured_figures,
    read_profile,
    record_profile,
)

__all__ = ["INSTRUCTIONS_PER_TICK", "PROFILE_COMMAND", "PROFILE_RECORD", "SYSCLK_HZ", "measured_figures",
           "read_profile", "record_profile"]
