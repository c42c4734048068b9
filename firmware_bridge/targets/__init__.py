"""The devices a run can target: the host board (the firmware built for this computer), the emulated Cortex-M4 (QEMU), a real Arduino board, and the sketch generator."""
