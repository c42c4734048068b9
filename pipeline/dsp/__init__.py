"""The DSP front ends on the host: the C99 sources of ``firmware_bridge/firmware/dsp`` built
into a shared library (``build``), called through ctypes (``binding``), and applied to a
split's windows before the model (``blocks``). One implementation: the device compiles the
same C. See docs/dsp.md."""
