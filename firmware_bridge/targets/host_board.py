"""The firmware built for this computer: the host board (firmware/boards/host/).

``build_host_board(run_dir)`` compiles the board's POSIX main, the AT protocol core every
board runs (firmware/core/) and the model compiled to C with the kernels it calls
(RUN/firmware/compiled/, the QEMU image's very sources) with the host's g++ into
RUN/device/host/, cached by content hash: the SHA-256 of every source and header, the
flags and the compiler's identity names the build, and an unchanged build is not redone.

``HostBoard(image)`` runs it with its UART on a pseudo-terminal it opens itself (the first
line it prints names it, as QEMU does for ``-serial pty``), hands back that port, and always
stops it: on leaving its ``with`` block, on an error, on Ctrl-C, and (Linux) when this
process dies. ``reset()`` re-executes the firmware on the same pseudo-terminal.

Timing lines are board time: cycles per inference over the board's clock
(pipeline/core/boards.py), never this computer's time (``board_timing``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.sources import BOARDS_DIR, CORE_DIR
from firmware_bridge.targets import sensor_file
from firmware_bridge.targets.board_process import BoardProcess, content_hash, run_tool
from firmware_bridge.targets.qemu import PROFILE_RECORD, ensure_compiled_model
from pipeline.core.artifacts import read_json, sha256_file, write_json
from pipeline.core.boards import DEFAULT_BOARD, get_board
from pipeline.core.errors import BridgeError, PipelineError
from pipeline.tflite import latency

DSP_DIR = CORE_DIR.parent / "dsp"  # the [dsp] blocks (tm_dsp.c), one source with pipeline/dsp/build.py

BOARD_DIR = BOARDS_DIR / "host"
BUILD_DIR = Path("device") / "host"  # in the run directory
BUILD_RECORD = "build.json"
PACKAGE = "g++"  # Debian's: brings g++ and gcc
INSTALL_LINE = f"sudo apt-get install --no-install-recommends {PACKAGE}"
CXX, CC = "g++", "gcc"
DEFAULT_CHUNK_SIZE = 32  # the Nano 33 BLE Sense's, as Edge Impulse's firmware has it

COMPILE_FLAGS = ("-O2", "-g", "-Wall", "-Wextra")
C_FLAGS = ("-std=c11", "-ffp-contract=off")  # no fused multiply-add: tm_dsp.c gives the host library's bits
CXX_FLAGS = ("-std=c++14", "-fno-exceptions", "-fno-rtti")
LINK_LIBS = ("-lm",)

# The recording file the IMU plays (firmware_bridge/targets/sensor_file.py: one format with QEMU's).
SENSOR_FILE = sensor_file.SENSOR_FILE
write_sensor_file = sensor_file.write_sensor_file
sensor_name = sensor_file.sensor_name

PTY_RE = re.compile(r"char device redirected to (\S+) \(label uart0\)")


def require_compiler() -> None:
    """The host's C and C++ compilers, or one line naming the package that brings them."""
    missing = [tool for tool in (CXX, CC) if shutil.which(tool) is None]
    if missing:
        raise BridgeError(f"the host board needs {' and '.join(missing)}: install the Debian package {PACKAGE}",
                          hint=INSTALL_LINE)


# ---------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostImage:
    """A built host board: the executable, the build's content hash, whether this call
    built it and how long that took (0 when it was up to date)."""

    exe: Path
    inputs_sha256: str
    rebuilt: bool
    build_seconds: float
    has_model: bool


def _sources(run_dir: Path, with_model: bool) -> tuple[list[Path], list[Path], list[Path]]:
    """(sources, headers, include directories): the QEMU image's core and model, this board's main."""
    settings = run_dir / "firmware" / "model_settings.h"
    if not settings.is_file():
        raise BridgeError(f"{settings}: not found", hint="run `tinyml quantize` (make quantize) first")
    sources = sorted(BOARD_DIR.glob("*.cpp")) + sorted(CORE_DIR.glob("*.cpp"))
    # The [dsp] block's C99 source (the host library's, pipeline/dsp/build.py) and the run's
    # dsp_settings.h (quantize writes it beside model_settings.h; tm_impulse.h reads it).
    sources.append(DSP_DIR / "tm_dsp.c")
    includes = [BOARD_DIR, CORE_DIR, DSP_DIR, settings.parent]
    inputs = [settings, *sorted(BOARD_DIR.glob("*.h")), *sorted(CORE_DIR.glob("*.h")), DSP_DIR / "tm_dsp.h",
              *([settings.parent / "dsp_settings.h"] if (settings.parent / "dsp_settings.h").is_file() else [])]
    if with_model:
        compiled = ensure_compiled_model(run_dir)
        sources += sorted(compiled.glob("*.c"))
        inputs += sorted(compiled.glob("*.h"))
        includes.append(compiled)
    return sources, inputs, includes


def _compiler_identity() -> str:
    lines = []
    for tool in (CXX, CC):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
        lines.append(out.splitlines()[0] if out else tool)
    return "; ".join(lines)


def build_host_board(run_dir: str | os.PathLike, *, with_model: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     jobs: int | None = None) -> HostImage:
    """RUN/device/host/firmware-<hash>, built only when no build of the same inputs exists.
    ``chunk_size``: AT+RUNIMPULSESTATIC's base64 characters per chunk ([device] chunk_size)."""
    require_compiler()
    if chunk_size <= 0 or chunk_size % 16:
        raise BridgeError(f"chunk size {chunk_size}: expected a positive multiple of 16")
    run_dir = Path(run_dir)
    sources, inputs, includes = _sources(run_dir, with_model)
    compile_flags = [*COMPILE_FLAGS, f"-DTINYML_STATIC_CHUNK_SIZE={int(chunk_size)}"]
    flags = [*compile_flags, *C_FLAGS, *CXX_FLAGS, *LINK_LIBS]
    stamp = content_hash(sources + inputs, flags, _compiler_identity())
    out_dir = run_dir / BUILD_DIR
    exe = out_dir / f"firmware-{stamp[:16]}"
    if exe.is_file() and os.access(exe, os.X_OK):
        return HostImage(exe, stamp, rebuilt=False, build_seconds=0.0, has_model=with_model)

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    include_flags = [f"-I{d}" for d in includes]
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
        tmp = Path(tmp)

        def compile_one(index_source):
            index, source = index_source
            obj = tmp / f"{index:02d}_{source.stem}.o"
            cxx = source.suffix in (".cpp", ".cc")
            run_tool([CXX if cxx else CC, *compile_flags, *(CXX_FLAGS if cxx else C_FLAGS), *include_flags,
                       "-c", str(source), "-o", str(obj)], f"{CXX if cxx else CC} {source.name}")
            return obj

        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            objects = list(pool.map(compile_one, enumerate(sources)))
        tmp_exe = tmp / exe.name
        run_tool([CXX, *map(str, objects), *LINK_LIBS, "-o", str(tmp_exe)], f"linking {exe.name}")
        for old in out_dir.glob("firmware-*"):  # earlier builds of other inputs
            old.unlink(missing_ok=True)
        os.replace(tmp_exe, exe)
    seconds = time.perf_counter() - started
    write_json(out_dir / BUILD_RECORD, {"inputs_sha256": stamp, "exe": str(exe), "compiler": _compiler_identity(),
                                        "flags": flags, "sources": [str(s) for s in sources],
                                        "build_seconds": round(seconds, 3), "has_compiled_model": with_model})
    return HostImage(exe, stamp, rebuilt=True, build_seconds=seconds, has_model=with_model)


# ---------------------------------------------------------------------------------------
# Board time
# ---------------------------------------------------------------------------------------


PROFILE_JSON = "profile.json"  # `tinyml profile`'s, in the run directory (firmware_bridge/targets/profile.py)


def _measured_instructions(path: Path, model: Path, what: str) -> int | None:
    """instructions_per_inference of a record measured for this very model (its SHA-256), or None."""
    if not (path.is_file() and model.is_file()):
        return None
    record = read_json(path, what)
    if isinstance(record, dict) and record.get("model_sha256") == sha256_file(model) \
            and isinstance(record.get("instructions_per_inference"), int) and record["instructions_per_inference"] > 0:
        return record["instructions_per_inference"]
    return None


def board_timing(run_dir: str | os.PathLike, board: str | None = None) -> dict:
    """The board's clock (boards.py) and the cycles an inference takes there, the first of:
    the instructions QEMU's Cortex-M4 measured for this very model during an evaluation
    (RUN/device/qemu/profile.json, `tinyml flash --device qemu`), or in `tinyml profile`
    (RUN/profile.json: the invoke, built without per-op hooks); one cycle an instruction, a
    lower bound. Else the compiled model's instructions predicted from op costs measured on
    QEMU (pipeline/tflite/latency.py), said to be a prediction. Without a model, no cycle
    count: Timing lines say 0 and AT+PROFILE? says why (never this computer's time)."""
    run_dir = Path(run_dir)
    report = read_json(run_dir / "quantize_report.json", "the quantize report") \
        if (run_dir / "quantize_report.json").is_file() else {}
    name = board or (report.get("board") if isinstance(report.get("board"), str) else None) or DEFAULT_BOARD
    try:
        profile = get_board(name)
    except PipelineError:
        profile = get_board(DEFAULT_BOARD)
    timing = {"board": profile.name, "clock_hz": profile.clock_hz}
    model = run_dir / "int8.tflite"
    for path, what in ((run_dir / "device" / "qemu" / PROFILE_RECORD, "an evaluation on QEMU's Cortex-M4"),
                       (run_dir / PROFILE_JSON, "`tinyml profile` on QEMU's Cortex-M4")):
        n = _measured_instructions(path, model, str(path))
        if n:
            return {**timing, "cycles_per_inference": n,
                    "source": f"{latency.LABEL_MEASURED}: {n} instructions per inference in {what} "
                              f"({path.name}), 1 cycle each"}
    if not model.is_file():
        return timing
    p = latency.predict(model.read_bytes())
    cycles = round(p["instructions_per_inference"] * latency.CPI)
    return {**timing, "cycles_per_inference": cycles,
            "source": f"{latency.LABEL_PREDICTED}: {p['instructions_per_inference']} instructions of the compiled "
                      f"model, {latency.CPI:g} cycle each",
            "source_detail": p["table"]}


# ---------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------


class HostBoard(BoardProcess):
    """The host board running ``image``, its UART on a pseudo-terminal (``port``).

    Use as a context manager (or call ``stop``): the process is stopped on every way out.
    """

    pty_re = PTY_RE

    def __init__(self, image: HostImage | str | os.PathLike, *, sensor: str | os.PathLike | None = None,
                 timing: dict | None = None, time_scale: float = 1.0, device_type: str | None = None,
                 sensor_name: str | None = None):
        super().__init__()
        self.exe = Path(image.exe if isinstance(image, HostImage) else image)
        self.sensor = Path(sensor) if sensor else None
        self.sensor_name = sensor_name
        self.timing = timing or {}
        self.time_scale = time_scale
        self.device_type = device_type

    @property
    def command(self) -> list[str]:
        cmd = [str(self.exe), "--pty"]
        if self.sensor:
            cmd += ["--sensor", str(self.sensor)]
            if self.sensor_name:
                cmd += ["--sensor-name", self.sensor_name]
        if self.time_scale != 1.0:
            cmd += ["--time-scale", repr(float(self.time_scale))]
        if self.timing.get("clock_hz"):
            cmd += ["--clock-hz", str(int(self.timing["clock_hz"]))]
        if self.timing.get("cycles_per_inference"):
            cmd += ["--cycles-per-inference", str(int(self.timing["cycles_per_inference"])),
                    "--cycles-source", self.timing.get("source", "given")]
        if self.device_type:
            cmd += ["--device-type", self.device_type]
        return cmd

    def start(self) -> HostBoard:
        if not self.exe.is_file():
            raise BridgeError(f"{self.exe}: no host board build", hint="build it with `tinyml flash --device emu`")
        try:
            self._spawn()
        except BaseException:
            self.stop()
            raise
        return self

    def reset(self) -> None:
        """The reset button: the firmware starts over on the same pseudo-terminal."""
        if self.running:
            self.process.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; idempotent."""
        self._terminate()


def boot(run_dir: str | os.PathLike, *, sensor: str | os.PathLike | None = None, board: str | None = None,
         time_scale: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[HostImage, HostBoard]:
    """Build (if stale) and start the host board of ``run_dir``; ``sensor``: an .npz of
    recordings (default: RUN/device/flash/sensor.npz when there is one)."""
    run_dir = Path(run_dir)
    image = build_host_board(run_dir, chunk_size=chunk_size)
    sensor_bin, name = sensor_file.run_sensor(run_dir, sensor, out_dir=run_dir / BUILD_DIR)
    board_ = HostBoard(image, sensor=sensor_bin, timing=board_timing(run_dir, board), time_scale=time_scale,
                       sensor_name=name)
    return image, board_.start()
