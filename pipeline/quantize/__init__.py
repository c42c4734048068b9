"""The quantize stage: int8 conversion calibrated on training data, the gates against float and TFLM, and the per-layer comparison."""
