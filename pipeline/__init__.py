"""Host-side ML of tinyml-pipeline: datasets, splits, audit, training, quantization, report.

Heavy libraries (TensorFlow, LiteRT, TFLM) are imported inside the stages that use them,
so importing this package is cheap.
"""

from pipeline.core.errors import GateFailed, PipelineError

__all__ = ["PipelineError", "GateFailed"]
