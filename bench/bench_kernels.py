"""Instructions per inference of the compiled kernels on the emulated Cortex-M4, per layer,
beside Arm CMSIS-NN's figures for the same layers (issue 24, measured there on the same
board, flags and model: QEMU mps2-an386, -icount shift=0).

The models are built here in Keras with random weights and fully int8-quantized (the
instruction counts of the kernels do not depend on the weights' values):
- ``default``: the pipeline's default architecture (width 6, depth 3, kernel 7, the input
  normalization as SUB and MUL) on the default window, 125 steps of 3 axes, 4 classes;
- ``dscnn``: MLPerf Tiny's keyword-spotting DS-CNN shape, 49x10x1, CONV 10x4 stride 2
  to 64, four blocks of depthwise 3x3 + pointwise 64, average pool, fully connected 12;
- ``mobilenet``: MobileNetV1-0.25 on 96x96x3 (visual wake words), 2 classes.

Each model's outputs on QEMU are checked against TFLM on the host, byte for byte, before a
figure is kept. Writes bench/results/kernels.json.

    python bench/bench_kernels.py [--only default] [--out bench/results/kernels.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Issue 24's CMSIS-NN column for the default model (instructions per inference, per layer in
# graph order; SUB, MUL and MEAN ran the project's own code on both sides there).
CMSIS_NN_DEFAULT = {
    "SUB": 56_960, "MUL": 30_800, "conv1": 117_200, "pool1": 13_360, "conv2": 121_360,
    "pool2": 10_000, "conv3": 158_480, "MEAN": 35_800, "FULLY_CONNECTED": 600, "SOFTMAX": 2_280,
    "whole": 546_440,
}
TARGET_RATIO = 0.8
NO_CMSIS_NN = "not measured (issue 24 gives none; CMSIS-NN is not built here)"


def default_model():
    import keras

    from pipeline.ml.model import ModelParams, build_model

    keras.utils.set_random_seed(0)
    X = np.random.default_rng(0).normal(0, 2, size=(256, 125, 3)).astype(np.float32)
    params = ModelParams(width=6, depth=3, kernel_size=7, separable=False, dropout=0.0)
    return build_model((125, 3), 4, params, train_X=X, priors=np.full(4, 0.25)), X


def dscnn_model():
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    inp = keras.Input((49, 10, 1), batch_size=1)  # static shapes: Flatten is a RESHAPE, not SHAPE
    z = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, (10, 4), strides=2, padding="same")(inp)))
    for _ in range(4):
        z = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(z)))
        z = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 1)(z)))
    z = L.Flatten()(L.AveragePooling2D(pool_size=(z.shape[1], z.shape[2]))(z))
    out = L.Dense(12, activation="softmax")(z)
    X = np.random.default_rng(0).normal(0, 1, size=(128, 49, 10, 1)).astype(np.float32)
    return keras.Model(inp, out), X


def mobilenet_model():
    import keras

    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNet(input_tensor=keras.Input((96, 96, 3), batch_size=1), alpha=0.25,
                                       weights=None, classes=2, include_top=True)
    X = np.random.default_rng(0).uniform(-1, 1, size=(32, 96, 96, 3)).astype(np.float32)
    _batch_norm_from_data(net, X)
    return net, X


def _batch_norm_from_data(net, X) -> None:
    """Every BatchNormalization's moving statistics set to its input's statistics on X (one
    pass in training mode with momentum 0). With the initial statistics (mean 0, variance 1)
    27 random layers of ReLU6 leave MobileNet's logits all but constant: the softmax input's
    scale came out near 1e-8, and TFLM's softmax Prepare aborts the process without a word
    on a multiplier below 1 (quantization_util.cc QuantizeMultiplierGreaterThanOne): that was
    why `bench_kernels --all` ended silently on it."""
    from keras import layers as L

    norms = [layer for layer in net.layers if isinstance(layer, L.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    net(X, training=True)


def measure(name: str, build, work: Path) -> dict:
    from tflite_micro.python.tflite_micro import runtime

    from firmware_bridge.compiler import read_graph
    from firmware_bridge.targets import profile as P
    from pipeline.tflite.convert import convert_int8
    from pipeline.tflite.runtime import quantize_int8

    model, X = build()
    data, _ = convert_int8(model, X)
    graph = read_graph(data)
    t_in = graph.tensors[graph.inputs[0]]
    x_q = quantize_int8(X[:2], float(t_in.scale), int(t_in.zero_point)).reshape(2, -1)
    start = time.perf_counter()
    # Compiled first: a model TFLM would refuse gets the compiler's one-line error here, where
    # TFLM's Prepare would abort the whole process without a word.
    p = P.profile_model(data, work / name, x_q=x_q, source=f"{name}.tflite")
    interp = runtime.Interpreter.from_bytes(data, arena_size=8 << 20)
    theirs = []
    for x in x_q:
        interp.set_input(x.reshape(interp.get_input_details(0)["shape"]), 0)
        interp.invoke()
        theirs.append(np.asarray(interp.get_output(0)).reshape(-1).tolist())
    if theirs != p["outputs_on_qemu"]:
        raise SystemExit(f"{name}: the outputs on QEMU differ from TFLM's: {p['outputs_on_qemu']} vs {theirs}")
    p["identical_to_tflm_on_qemu"] = True
    p["seconds"] = round(time.perf_counter() - start, 1)
    return p


def compare_default(p: dict) -> dict:
    rows = []
    for r in p["layers"]:
        key = r["layer"] if r["layer"] in CMSIS_NN_DEFAULT else r["op"]
        cmsis = CMSIS_NN_DEFAULT.get(key)
        rows.append({"layer": r["layer"], "op": r["op"], "shape": r["shape"], "ours": r["instructions"],
                     "cmsis_nn": cmsis, "ratio": round(r["instructions"] / cmsis, 3) if cmsis else None})
    whole = p["instructions_per_inference"]
    return {"layers": rows, "ours": whole, "cmsis_nn": CMSIS_NN_DEFAULT["whole"],
            "ratio": round(whole / CMSIS_NN_DEFAULT["whole"], 3), "target_ratio": TARGET_RATIO,
            "cmsis_nn_source": "issue 24 (CMSIS-NN built for the same board and flags, default model, real weights)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("default", "dscnn", "mobilenet"), action="append",
                    help="measure only these models (default: all three)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "kernels.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from firmware_bridge.targets import profile as P
    from pipeline.core.artifacts import write_json

    models = {"default": default_model, "dscnn": dscnn_model, "mobilenet": mobilenet_model}
    models = {k: v for k, v in models.items() if not args.only or k in args.only}
    import platform

    results = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                        "load_average_1min": round(os.getloadavg()[0], 2)}}
    with tempfile.TemporaryDirectory(prefix="bench-kernels-") as tmp:
        for name, build in models.items():
            p = measure(name, build, Path(tmp))
            p.pop("outputs_on_qemu", None)
            results[name] = p
            print(f"== {name}")
            for line in P.format_profile(p):
                print(line)
    if "default" in results:
        results["default_vs_cmsis_nn"] = compare_default(results["default"])
        c = results["default_vs_cmsis_nn"]
        print(f"default model: {c['ours']} instructions vs CMSIS-NN {c['cmsis_nn']}: ratio {c['ratio']}")
    for name in ("dscnn", "mobilenet"):
        if name in results:
            # Issue 24 gives CMSIS-NN's figures for the default model only; none was measured
            # here for these two (CMSIS-NN is not installed): no ratio is claimed for them.
            results[name]["cmsis_nn"] = None
            results[name]["cmsis_nn_note"] = NO_CMSIS_NN
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
