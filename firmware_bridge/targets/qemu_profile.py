"""What only the image on QEMU can measure, read over its own command AT+PROFILE?: the
stack's high-water mark and the instructions an inference executes (SysTick under -icount
shift=0, its rate checked against the calibration the firmware runs at boot).
"""

from __future__ import annotations

import re
from pathlib import Path

from firmware_bridge.host import protocol
from pipeline.core.artifacts import write_json
from pipeline.core.boards import CYCLES_PER_MAC_OPTIMIZED, CYCLES_PER_MAC_REFERENCE, CYCLES_SOURCE
from pipeline.core.errors import BridgeError

MACHINE = "mps2-an386"  # qemu.MACHINE

PROFILE_COMMAND = "AT+PROFILE?"
SYSCLK_HZ = 25_000_000  # board.h TINYML_SYSCLK_HZ: SysTick counts the processor clock
# Under -icount shift=0 one instruction is 1 ns of virtual time, so one SysTick tick of the
# 25 MHz clock is 40 instructions. The firmware measures this at boot (a loop of a known
# number of instructions) and read_profile checks it, so the figure is never assumed.
INSTRUCTIONS_PER_TICK = 1_000_000_000 // SYSCLK_HZ
CALIBRATION_TOLERANCE = 0.001  # the SysTick interrupt's own instructions, once per ms
_CALIBRATION_RE = re.compile(r"(\d+) instructions in (\d+) ticks")
_INVOKE_RE = re.compile(r"(last|min|max) (\d+)")


def read_profile(client) -> dict:
    """AT+PROFILE? of the running firmware, parsed and checked: the stack's high-water mark
    and SysTick ticks per invoke, turned into instructions by the verified tick rate."""

    reply = client.command(PROFILE_COMMAND)
    fields = protocol.parse_fields(reply)
    try:
        m = _CALIBRATION_RE.search(fields["calibration"])
        calibrated_instructions, calibrated_ticks = int(m.group(1)), int(m.group(2))
        ticks = {k: int(v) for k, v in _INVOKE_RE.findall(fields["invoke ticks"])}
        if sorted(ticks) != ["last", "max", "min"]:
            raise ValueError("invoke ticks")
        profile = {
            "stack_size_bytes": int(fields["stack size"].split()[0]),
            "stack_high_water_bytes": int(fields["stack used"].split()[0]),
            "inferences": int(fields["inferences"]),
            "rx_overruns": int(fields["rx overruns"]),
        }
    except (KeyError, ValueError, AttributeError) as exc:
        raise BridgeError(f"{client.port}: {PROFILE_COMMAND} reply lacks or garbles {exc}: {reply[:200]!r}") from None
    measured = calibrated_instructions / calibrated_ticks if calibrated_ticks else 0.0
    if abs(measured - INSTRUCTIONS_PER_TICK) > CALIBRATION_TOLERANCE * INSTRUCTIONS_PER_TICK:
        raise BridgeError(
            f"{client.port}: SysTick counted {calibrated_ticks} ticks for {calibrated_instructions} instructions "
            f"({measured:.3f} per tick, expected {INSTRUCTIONS_PER_TICK}): instruction counts would be wrong",
            hint="QEMU must run with -icount shift=0 (firmware_bridge.targets.qemu.QemuBoard does)")
    profile["instructions_per_tick"] = INSTRUCTIONS_PER_TICK
    profile["calibration"] = {"instructions": calibrated_instructions, "ticks": calibrated_ticks,
                              "instructions_per_tick": round(measured, 4)}
    profile["invoke_ticks"] = ticks
    profile["instructions_per_inference"] = {k: v * INSTRUCTIONS_PER_TICK for k, v in ticks.items()}
    return profile


def measured_figures(image, profile: dict, macs: int | None) -> dict:
    """The figures of device_report.json's ``measured_on_emulated_cortex_m4``, with the
    MAC-based estimate beside the instruction count."""

    per_inference = profile["instructions_per_inference"]
    figures = {
        "machine": f"qemu-system-arm -M {MACHINE} -icount shift=0 (Cortex-M4F)",
        "elf": str(image.elf),
        "flash_bytes_text_plus_data": image.flash_bytes,
        "static_ram_bytes_data_plus_bss": image.static_ram_bytes,
        "elf_sections_bytes": {"text": image.text_bytes, "data": image.data_bytes, "bss": image.bss_bytes},
        "stack_high_water_bytes": profile["stack_high_water_bytes"],
        "stack_size_bytes": profile["stack_size_bytes"],
        "stack_note": "deepest the stack went since reset, by stack painting, read back over AT+PROFILE?",
        "instructions_per_inference": per_inference["max"],
        "instructions_per_inference_min_max": [per_inference["min"], per_inference["max"]],
        "inferences_counted": profile["inferences"],
        "instructions_note": (
            f"instructions executed by tinyml_model_invoke (the most over this boot's inferences; min and max "
            f"listed), counted by SysTick around it under -icount shift=0 "
            f"(1 tick = {INSTRUCTIONS_PER_TICK} instructions, checked at boot: {profile['calibration']['instructions']} "
            f"instructions in {profile['calibration']['ticks']} ticks); resolution {INSTRUCTIONS_PER_TICK} instructions. "
            "Instructions, not cycles: QEMU does not model the pipeline or memory wait states"),
        "uart_rx_overruns": profile["rx_overruns"],
    }
    if macs:
        figures["mac_estimate"] = {
            "macs": int(macs),
            "estimated_cycles_reference_kernels": round(macs * CYCLES_PER_MAC_REFERENCE),
            "estimated_cycles_optimized_kernels": round(macs * CYCLES_PER_MAC_OPTIMIZED),
            "measured_instructions_per_mac": round(per_inference["max"] / macs, 2),
            "label": "estimated (MACs x cycles/MAC), not measured",
            "source": CYCLES_SOURCE,
        }
    return figures


PROFILE_RECORD = "profile.json"  # beside fw.elf: what the host board takes its board time from


def record_profile(image, figures: dict, model_sha256: str) -> Path:
    """RUN/device/qemu/profile.json: the instructions per inference measured on this model,
    for the host board's Timing lines (host_board.board_timing)."""
    return write_json(image.elf.parent / PROFILE_RECORD, {
        "model_sha256": model_sha256, "instructions_per_inference": int(figures["instructions_per_inference"]),
        "machine": figures["machine"]})
