"""The int8 model in the host TFLite interpreter (LiteRT): the reference the TFLM runtime
and the device are compared with.

LiteRT (``ai_edge_litert``) is the maintained interpreter; ``tflite_runtime`` (its last
release fails under NumPy 2) and ``tf.lite`` are the fallbacks. Its reference kernels
(``BUILTIN_REF``) implement the arithmetic TFLM implements; its default kernels (XNNPACK,
the optimized builtins) round requantization differently and approximate softmax.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.progress import import_tensorflow, progress, quiet_native_stderr


def host_interpreter():
    """(Interpreter, OpResolverType, name) of the host TFLite interpreter: LiteRT, the
    maintained one; else tflite_runtime (its last release fails under NumPy 2); else tf.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "tflite_runtime"
    except ImportError:
        pass
    tf = import_tensorflow()
    return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, "tf.lite"


def run_litert(data: bytes, x_q: np.ndarray, reference: bool = False) -> np.ndarray:
    """Quantized outputs of the int8 model in LiteRT, one window at a time."""
    Interpreter, OpResolverType, _ = host_interpreter()
    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    with quiet_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
        interp = Interpreter(model_content=data, experimental_op_resolver_type=kind, num_threads=1)
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outp = interp.get_output_details()[0]
    outs = []
    desc = "LiteRT reference kernels" if reference else "LiteRT"
    for x in progress(x_q, desc, total=len(x_q), unit="window"):
        interp.set_tensor(inp["index"], x.reshape(inp["shape"]))
        interp.invoke()
        outs.append(interp.get_tensor(outp["index"]).reshape(-1).copy())
    return np.stack(outs)


def run_default_kernels(data: bytes, x_q: np.ndarray) -> np.ndarray | str:
    """LiteRT's default kernels, reported and never gated: a model they refuse (XNNPACK
    rejects some requantization scales an extreme activation range gives) is said, not fatal."""
    try:
        return run_litert(data, x_q)
    except (RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"


def preserved_tensors(data: bytes, x_q: np.ndarray, indices: list[int]) -> list[np.ndarray]:
    """The int8 values of the tensors ``indices`` for every window, LiteRT reference kernels
    with ``experimental_preserve_all_tensors`` (the per-layer comparison)."""
    Interpreter, OpResolverType, _ = host_interpreter()
    with quiet_native_stderr():
        interp = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                             experimental_preserve_all_tensors=True, num_threads=1)
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs: list[list[np.ndarray]] = [[] for _ in indices]
    for x in progress(x_q, "per-layer LiteRT", total=len(x_q), unit="window"):
        interp.set_tensor(inp["index"], x.reshape(inp["shape"]))
        interp.invoke()
        for k, i in enumerate(indices):
            outs[k].append(np.array(interp.get_tensor(i)).reshape(-1))
    return [np.stack(o) for o in outs]
