"""The ops added for real models (LOGISTIC, TANH, HARD_SWISH, QUANTIZE as 256-byte tables;
SHAPE / STRIDED_SLICE / PACK computed at compile time), byte for byte TFLM's, and a refusal
naming every op the compiler lacks at once.

Each table op is checked on every one of the 256 int8 inputs, through TFLM's interpreter
(the harness of test_compiler.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_compiler import Compiled, Reference, assert_identical, convert, saturating_inputs

from firmware_bridge import compiler as C


def _activation_model(fn, width: float, seed: int):
    """Input (256,) -> Dense mixing -> the activation: the activation's input spans its scale."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(seed)
    inp = keras.Input((256,))
    z = L.Activation(fn, name="act")(inp)
    model = keras.Model(inp, z)
    X = np.random.default_rng(seed).normal(0, width, size=(64, 256)).astype(np.float32)
    return convert(model, X)


@pytest.mark.parametrize("fn,op,width", [("tanh", "TANH", 3.0), ("sigmoid", "LOGISTIC", 6.0),
                                         ("hard_swish", "HARD_SWISH", 4.0), ("tanh", "TANH", 0.2),
                                         ("sigmoid", "LOGISTIC", 40.0)])
def test_table_ops_on_every_int8_input(fn, op, width, tmp_path):
    data = _activation_model(fn, width, seed=int(width * 10))
    ops = {o.name for o in C.read_graph(data).ops}
    assert op in ops, ops
    ref, comp = Reference(data), Compiled(data, tmp_path)
    every = np.tile(np.arange(-128, 128, dtype=np.int8), (2, 1))
    every[1] = every[1][::-1]
    x = np.concatenate([every, saturating_inputs((256,), 6, seed=1).reshape(6, 256)])
    assert_identical(ref, comp, x, f"{op} on every int8 input (input width {width})")


def test_flatten_shape_ops_are_computed_at_compile_time(tmp_path):
    """A Flatten converted with a dynamic batch (SHAPE, STRIDED_SLICE, PACK feeding RESHAPE)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(2)
    inp = keras.Input((6, 5, 2))
    z = L.Conv2D(3, 3, activation="relu")(inp)
    out = L.Dense(4, activation="softmax")(L.Flatten()(z))
    X = np.random.default_rng(2).normal(0, 2, size=(32, 6, 5, 2)).astype(np.float32)
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([w * 30 for w in model.layers[-1].get_weights()[:1]] + model.layers[-1].get_weights()[1:])
    data = convert(model, X)
    from pipeline.tflite.flatbuffer import inspect_model

    raw_ops = {o.name for o in inspect_model(data).ops}
    graph_ops = {o.name for o in C.read_graph(data).ops}
    assert not graph_ops & {"SHAPE", "STRIDED_SLICE", "PACK"}, graph_ops
    ref, comp = Reference(data), Compiled(data, tmp_path)
    assert_identical(ref, comp, saturating_inputs((6, 5, 2), 16, seed=3), f"flatten ({sorted(raw_ops)})")


def test_a_refusal_names_every_missing_op_at_once(tmp_path):
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    a = L.DepthwiseConv2D(3, padding="same", dilation_rate=2, name="dilated")(inp)  # SPACE_TO_BATCH_ND ...
    b = L.Conv2DTranspose(2, 3, name="transposed")(a)
    out = L.GlobalAveragePooling2D()(b)
    data = convert(keras.Model(inp, out), np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype(np.float32))
    graph = C.read_graph(data)
    missing = sorted({op.name for op in graph.ops} - set(C.SUPPORTED_OPS))
    assert len(missing) >= 2, missing
    with pytest.raises(C.CompileError) as err:
        C.check_supported(graph)
    message = err.value.message
    assert all(name in message for name in missing) and "\n" not in message, message


def test_pad_concatenation_and_requantize(tmp_path):
    """ZeroPadding2D (PAD), a padded max pool (PADV2 where the converter writes one), and a
    concatenation of branches of different ranges (QUANTIZE requantizing to the output's
    scale where the converter inserts one)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(5)
    inp = keras.Input((7, 6, 3))
    a = L.ZeroPadding2D(((1, 2), (0, 1)))(inp)
    a = L.Conv2D(4, 3, activation="relu")(a)
    b = L.Conv2D(2, 3, activation="tanh")(L.ZeroPadding2D(((1, 2), (0, 1)))(inp))
    c = L.Concatenate()([a, L.Lambda(lambda t: t * 5.0)(b)])
    d = L.Concatenate(axis=1)([c, c])
    out = L.GlobalAveragePooling2D()(d)
    X = np.random.default_rng(5).normal(0, 2, size=(32, 7, 6, 3)).astype(np.float32)
    data = convert(keras.Model(inp, out), X)
    names = {o.name for o in C.read_graph(data).ops}
    assert {"PAD", "CONCATENATION"} <= names, names
    ref, comp = Reference(data), Compiled(data, tmp_path)
    x = np.concatenate([saturating_inputs((7, 6, 3), 12, seed=7),
                        np.random.default_rng(8).integers(-128, 128, size=(8, 7, 6, 3)).astype(np.int8)])
    assert_identical(ref, comp, x, f"pad / concatenation ({sorted(names)})")


def _as_requantize(data: bytes, scale_ratio: float, zero_point: int) -> bytes:
    """The one-op model (input -> TANH -> output) with its op made a QUANTIZE (int8 -> int8)
    to another scale and zero point: what the converter writes between tensors whose
    quantization must differ, built directly (Keras offers no layer that always gives one)."""
    from pipeline.tflite.flatbuffer import _AlignedBuilder, _schema

    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    graph = model.subgraphs[0]
    (op,) = graph.operators
    code = model.operatorCodes[op.opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.QUANTIZE
    op.builtinOptionsType, op.builtinOptions = 0, None
    q_in = graph.tensors[op.inputs[0]].quantization
    q_out = graph.tensors[op.outputs[0]].quantization
    q_out.scale = [float(q_in.scale[0]) * scale_ratio]
    q_out.zeroPoint = [zero_point]
    builder = _AlignedBuilder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("ratio,zero", [(1.7, 5), (0.3, -100), (3.1e-2, 0), (1.0, 17)])
def test_quantize_int8_to_int8_on_every_input(ratio, zero, tmp_path):
    data = _as_requantize(_activation_model("tanh", 3.0, seed=9), ratio, zero)
    assert [o.name for o in C.read_graph(data).ops] == ["QUANTIZE"]
    ref, comp = Reference(data), Compiled(data, tmp_path)
    every = np.arange(-128, 128, dtype=np.int8)[None]
    assert_identical(ref, comp, every, f"QUANTIZE x{ratio}, zero point {zero}")
