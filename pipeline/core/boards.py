"""Board profiles: the one table of board facts (from shared/DESIGN.md).

Pure data, no heavy imports: the quantize stage budgets against it, the virtual device caps
its arena and estimates timing with it, and ``tinyml ports`` guesses a board from VID:PID.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import PipelineError

# Published cycles per MAC for int8 convnets on a Cortex-M4 (MLPerf Tiny v0.5 / v1.1,
# keyword spotting on a 120 MHz Cortex-M4F). We have no figures of the same quality for
# the other cores, so every estimate uses these and says so. Only for the TFLM engine
# ([device] engine = "tflm": the Arduino sketch running TFLM's kernels): the compiled engine's
# latency is predicted from op costs measured on QEMU (pipeline/tflite/latency.py).
CYCLES_PER_MAC_REFERENCE = 8.0
CYCLES_PER_MAC_OPTIMIZED = 2.8
CYCLES_SOURCE = (
    "MLPerf Tiny v0.5/v1.1 int8 keyword spotting on a Cortex-M4F: about 8 cycles/MAC with "
    "TFLM reference kernels, 2.8 with vendor-optimized kernels; applied to every core; "
    "for the TFLM engine only"
)


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    mcu: str
    core: str
    clock_hz: int
    flash_bytes: int
    ram_bytes: int
    usb_ids: tuple[tuple[int, int], ...]
    fqbn: str | None = None

    def estimated_latency_ms(self, macs: int, cycles_per_mac: float) -> float:
        """MACs x cycles/MAC / clock: the TFLM engine's estimate, never a measurement."""
        return macs * cycles_per_mac / self.clock_hz * 1000.0

    def latency_estimate(self, macs: int) -> dict:
        return {
            "board": self.name,
            "clock_hz": self.clock_hz,
            "macs": int(macs),
            "reference_kernels_ms": round(self.estimated_latency_ms(macs, CYCLES_PER_MAC_REFERENCE), 3),
            "optimized_kernels_ms": round(self.estimated_latency_ms(macs, CYCLES_PER_MAC_OPTIMIZED), 3),
            "label": "estimated for the TFLM engine (MACs x cycles/MAC / clock), not measured",
            "source": CYCLES_SOURCE,
        }


KB = 1024
MB = 1024 * 1024

BOARDS: dict[str, Board] = {
    b.name: b
    for b in [
        Board("nano33ble", "Arduino Nano 33 BLE Sense", "nRF52840", "Cortex-M4F", 64_000_000,
              1 * MB, 256 * KB,
              ((0x2341, 0x805A), (0x2341, 0x005A), (0x2341, 0x015A), (0x2341, 0x025A)),
              fqbn="arduino:mbed_nano:nano33ble"),
        Board("nicla_sense_me", "Arduino Nicla Sense ME", "nRF52832", "Cortex-M4F", 64_000_000,
              512 * KB, 64 * KB, ((0x2341, 0x0060),)),
        Board("nicla_vision", "Arduino Nicla Vision", "STM32H747", "Cortex-M7", 480_000_000,
              2 * MB, 1 * MB,
              ((0x2341, 0x025F), (0x2341, 0x035F), (0x2341, 0x045F), (0x2341, 0x055F))),
        Board("pico", "Raspberry Pi Pico (RP2040)", "RP2040", "Cortex-M0+", 133_000_000,
              2 * MB, 264 * KB, ((0x2E8A, 0x000A), (0x2E8A, 0x00C0))),
        Board("wio_terminal", "Seeed Wio Terminal", "SAMD51", "Cortex-M4F", 120_000_000,
              512 * KB, 192 * KB, ((0x2886, 0x802D),)),
        Board("disco_l475vg", "ST B-L475E-IOT01A", "STM32L475", "Cortex-M4F", 80_000_000,
              1 * MB, 128 * KB, ((0x0483, 0x374B),)),
        Board("thingy53", "Nordic Thingy:53", "nRF5340", "Cortex-M33", 128_000_000,
              1 * MB, 512 * KB, ((0x1915, 0x530D),)),
        Board("esp32", "ESP32 dev kit (CP210x bridge)", "ESP32", "Xtensa LX6", 240_000_000,
              4 * MB, 520 * KB, ((0x10C4, 0xEA60),)),
        Board("esp32s3", "ESP32-S3 (native USB)", "ESP32-S3", "Xtensa LX7", 240_000_000,
              8 * MB, 512 * KB, ((0x303A, 0x1001),)),
    ]
}

DEFAULT_BOARD = "nano33ble"


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise PipelineError(
            f"unknown board {name!r}",
            hint=f"known boards: {', '.join(BOARDS)}",
        ) from None


def board_for_usb(vid: int | None, pid: int | None) -> Board | None:
    """The board whose USB VID:PID matches, or None."""
    if vid is None or pid is None:
        return None
    for board in BOARDS.values():
        if (vid, pid) in board.usb_ids:
            return board
    return None


def model_budgets(q, board: str | None = None) -> tuple[int, int]:
    """Flash and RAM bytes a model may use on ``board`` (default ``[quantize]`` board): the board's
    memory minus the reserve kept for the firmware, unless a budget in bytes is configured.
    The one rule the quantize stage gates on and the search costs trials against."""
    profile = get_board(board or q.board)
    return (q.flash_budget_bytes or int(profile.flash_bytes * (1 - q.flash_reserve)),
            q.ram_budget_bytes or int(profile.ram_bytes * (1 - q.ram_reserve)))

