"""The devices a run can target: the virtual device, the emulated Cortex-M4 (QEMU), a real Arduino board, and the sketch generator."""
