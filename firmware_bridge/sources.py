"""Where the C and C++ sources live: one place for every builder (sketch, QEMU image, compiler).

``firmware/core`` is the device core (AT server, commands, acquisition, base64, device I/O),
shared by every board; ``firmware/kernels`` the compiled model's kernels; ``firmware/boards/X``
one folder per board (``arduino`` holds the .ino sketch, ``mps2_an386`` the emulated Cortex-M4).
"""

from __future__ import annotations

from pathlib import Path

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
CORE_DIR = FIRMWARE_DIR / "core"
KERNEL_DIR = FIRMWARE_DIR / "kernels"
BOARDS_DIR = FIRMWARE_DIR / "boards"
ARDUINO_DIR = BOARDS_DIR / "arduino"
