"""Where int8 loses accuracy: every intermediate tensor, float vs int8 and LiteRT vs TFLM.

What TFLM's layer_by_layer_debugger and ST Edge AI's per-layer validation give their users.
The int8 model runs in LiteRT's reference kernels with ``experimental_preserve_all_tensors``
and in TFLM's Python runtime with ``kPreserveAllTensors`` (tflite-micro
python/tflite_micro/runtime.py: ``GetTensor`` then reads any tensor after ``invoke``); the
float model runs as a Keras model whose outputs are the matching layers' outputs.

One comparison point per Keras layer of origin: the output of the last op the converter
made from that layer (a fused CONV_2D+RELU is compared with the ReLU layer's output, a
SOFTMAX with the Dense layer's), plus the int8 graph's input, since quantizing the input is
often where the information goes. For each point:

- float vs int8 (dequantized): RMSE, RMSE relative to the float tensor's spread, largest
  error in LSB of that tensor's scale, cosine similarity;
- LiteRT reference kernels vs TFLM (both int8): largest difference in LSB and the share of
  values that differ. Not gated: the two implement the same arithmetic but differ in a few
  places (tensorflow/tflite-micro issues 3130 and 2629: rounding of the requantization
  multiplier and of MEAN and SOFTMAX), and a 1-LSB step can cascade through later layers.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.core.progress import progress
from pipeline.tflite.flatbuffer import ModelInfo
from pipeline.tflite.litert import preserved_tensors

# Generous arena for TFLM with every tensor preserved (no buffer is reused, so it needs the
# sum of all tensors): any model that fits a microcontroller fits this many times over.
PRESERVE_ARENA_BYTES = 16 * 1024 * 1024
# A point is where "int8 loses it" when its 1 - cosine grows by at least this over the
# point before it. Seen here: a healthy int8 model's points stay above cosine 0.995; a
# crushed input or a layer with a clipped activation range drops to 0.9 or lower.
JUMP_MIN = 0.01
# A channel whose int8 error reaches half its own RMS has lost its signal: it fell below a
# few LSB of a scale set by larger channels (healthy layers here stay below 0.1).
CHANNEL_LOST = 0.5
INPUT_POINT = "(input)"


# Ops whose output is a Normalization layer's output ((x - mean) * 1/std). When the
# converter folds the scaling into the next convolution (seen on 8x8 images: only a SUB is
# left), the layer's output never exists in the int8 graph and is not compared.
NORMALIZATION_LAST_OPS = ("MUL", "DIV")


def comparison_points(info: ModelInfo, layer_order: list[str], layer_sizes: dict[str, int],
                      layer_types: dict[str, str] | None = None) -> list[dict]:
    """The op outputs to compare, one per layer of origin, each with its float layer (or None)."""
    layer_types = layer_types or {}
    groups: list[tuple[str | None, list]] = []
    for op in info.ops:
        if groups and groups[-1][0] == op.layer and op.layer is not None:
            groups[-1][1].append(op)
        else:
            groups.append((op.layer, [op]))
    points = []
    for layer, ops in groups:
        last = ops[-1]
        if not last.outputs:
            continue
        tensor = info.tensors[last.outputs[0]]
        size = int(np.prod(tensor.shape)) if tensor.shape else 1
        named = _layers_named(tensor.name, layer_order)
        if layer and layer not in named:
            named.append(layer)
        # The output of a fused op is the output of the latest layer it absorbed.
        candidates = [n for n in sorted(named, key=layer_order.index) if layer_sizes.get(n) == size
                      and (layer_types.get(n) != "Normalization" or last.name in NORMALIZATION_LAST_OPS)]
        points.append({
            "layer": layer or f"op{last.index}",
            "ops": [op.name for op in ops],
            "tensor": last.outputs[0],
            "float_layer": candidates[-1] if candidates else None,
        })
    return points


def _layers_named(tensor_name: str, layer_order: list[str]) -> list[str]:
    names = set(layer_order)
    found = []
    for part in tensor_name.split(";"):
        for comp in part.split("/")[1:]:
            base = comp if comp in names else re.sub(r"_\d+$", "", comp)
            if base in names and base not in found:
                found.append(base)
    return found


def _tflm_tensors(data: bytes, x_q: np.ndarray, indices: list[int]) -> list[np.ndarray] | None:
    from tflite_micro.python.tflite_micro import runtime

    try:
        interp = runtime.Interpreter.from_bytes(
            data, arena_size=PRESERVE_ARENA_BYTES,
            intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    except RuntimeError:
        return None
    shape = tuple(int(d) for d in interp.get_input_details(0)["shape"])
    outs: list[list[np.ndarray]] = [[] for _ in indices]
    for x in progress(x_q, "per-layer TFLM", total=len(x_q), unit="window"):
        interp.set_input(np.ascontiguousarray(x.reshape(shape)), 0)
        interp.invoke()
        for k, i in enumerate(indices):
            outs[k].append(np.asarray(interp.GetTensor(i, 0)["tensor_data"]).reshape(-1))
    return [np.stack(o) for o in outs]


def _float_tensors(model, x: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
    import keras

    if not layers:
        return {}
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
    outs = probe.predict(np.asarray(x, np.float32), batch_size=256, verbose=0)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return {n: np.asarray(o, np.float64).reshape(len(x), -1) for n, o in zip(layers, outs, strict=True)}


def float_vs_int8(ref: np.ndarray, q: np.ndarray, scale: float, zero_point: int, channels: int = 1) -> dict:
    """Error of the dequantized int8 tensor against the float one, over all windows; also per
    channel (the last axis), since one tensor scale serves every channel and a channel far
    smaller than the largest can fall below one LSB while the whole-tensor cosine stays ~1."""
    r = ref.astype(np.float64).ravel()
    a = (q.astype(np.float64).ravel() - zero_point) * scale
    d = a - r
    rmse = float(np.sqrt(np.mean(d**2))) if d.size else 0.0
    spread = float(np.std(r))
    nr, na = np.linalg.norm(r), np.linalg.norm(a)
    worst, worst_c = None, None
    if channels >= 1 and r.size % channels == 0:
        rc, dc = r.reshape(-1, channels), d.reshape(-1, channels)
        rms = np.sqrt(np.mean(rc**2, axis=0))
        err = np.sqrt(np.mean(dc**2, axis=0))
        live = rms > 0  # a dead channel (all exact zeros) has no signal to lose
        if live.any():
            ratio = np.where(live, err / np.where(live, rms, 1.0), -1.0)
            worst_c = int(np.argmax(ratio))
            worst = float(ratio[worst_c])
    return {
        "rmse": rmse,
        "relative_rmse": rmse / spread if spread else None,
        "max_error_lsb": float(np.max(np.abs(d)) / scale) if d.size and scale else None,
        "cosine": float(r @ a / (nr * na)) if nr and na else (1.0 if not nr and not na else 0.0),
        "worst_channel": worst_c,
        "worst_channel_error": worst,
    }


def runtime_vs_runtime(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return {"max_lsb": int(diff.max()) if diff.size else 0,
            "differing_share": float(np.mean(diff > 0)) if diff.size else 0.0}


def compare_layers(model, data: bytes, info: ModelInfo, x_float_input: np.ndarray, x_q: np.ndarray,
                   input_reference: np.ndarray, input_float_layer: str) -> dict:
    """The per-layer table for windows ``x_float_input`` (raw, what the float model takes),
    ``x_q`` (the same windows as the int8 graph's input) and ``input_reference`` (the float
    values the int8 input stands for: raw windows, or normalized ones when the device
    normalizes)."""
    order = [layer.name for layer in model.layers]
    sizes = {layer.name: int(np.prod(layer.output.shape[1:])) for layer in model.layers}
    points = comparison_points(info, order, sizes, {layer.name: type(layer).__name__ for layer in model.layers})
    indices = [p["tensor"] for p in points]
    litert = preserved_tensors(data, x_q, indices)
    tflm = _tflm_tensors(data, x_q, indices)
    floats = _float_tensors(model, x_float_input, sorted({p["float_layer"] for p in points if p["float_layer"]},
                                                         key=order.index))
    inp = info.input
    rows = [{
        "layer": INPUT_POINT, "ops": ["input"], "float_layer": input_float_layer,
        "shape": list(inp.shape), "scale": inp.scales[0], "zero_point": inp.zero_points[0],
        "float_vs_int8": float_vs_int8(input_reference.reshape(len(x_q), -1), x_q.reshape(len(x_q), -1),
                                       inp.scales[0], inp.zero_points[0], int(inp.shape[-1])),
        "litert_vs_tflm": {"max_lsb": 0, "differing_share": 0.0},
    }]
    for k, p in enumerate(points):
        t = info.tensors[p["tensor"]]
        row = {"layer": p["layer"], "ops": p["ops"], "float_layer": p["float_layer"], "shape": list(t.shape),
               "scale": t.scales[0] if t.scales else None,
               "zero_point": t.zero_points[0] if t.zero_points else None}
        if p["float_layer"] and t.scales and t.dtype == "int8":
            row["float_vs_int8"] = float_vs_int8(floats[p["float_layer"]], litert[k], t.scales[0], t.zero_points[0],
                                                 int(t.shape[-1]) if t.shape else 1)
        row["litert_vs_tflm"] = runtime_vs_runtime(litert[k], tflm[k]) if tflm is not None else None
        rows.append(row)
    return {
        "windows": int(len(x_q)),
        "layers": rows,
        "jump": error_jump(rows),
        "litert_vs_tflm_note": (
            "LiteRT's reference kernels and TFLM implement the same int8 arithmetic but are not "
            "bit-identical everywhere (rounding of requantization, MEAN and SOFTMAX: "
            "tensorflow/tflite-micro issues 3130 and 2629); a 1-LSB step in one layer can grow in "
            "later ones. Reported, not gated: the gate is their top-1 agreement. The device must "
            "match host TFLM bit for bit, and that is checked by flash."),
        "tflm_available": tflm is not None,
        "method": "LiteRT reference kernels with experimental_preserve_all_tensors; TFLM "
        "kPreserveAllTensors + GetTensor; float: a Keras model returning the matching layers' outputs; "
        "one point per layer of origin (the output of its last op)",
    }


def error_jump(rows: list[dict]) -> dict | None:
    """Where int8 loses the signal: the first point (in graph order) where 1 - cosine grows by
    at least JUMP_MIN over the point before it, or where a channel's error reaches
    CHANNEL_LOST of its own RMS; else the point where 1 - cosine grows most (not significant)."""
    prev, steps = 1.0, []
    for row in rows:
        fi = row.get("float_vs_int8")
        if not fi or fi["cosine"] is None:
            continue
        steps.append(((1 - fi["cosine"]) - (1 - prev), row, prev))
        prev = fi["cosine"]
    if not steps:
        return None
    first = next((st for st in steps if st[0] >= JUMP_MIN
                  or (st[1]["float_vs_int8"].get("worst_channel_error") or 0) >= CHANNEL_LOST), None)
    step, row, before = first or max(steps, key=lambda st: st[0])
    fi = row["float_vs_int8"]
    return {"layer": row["layer"], "ops": row["ops"], "cosine": fi["cosine"], "cosine_before": before,
            "relative_rmse": fi["relative_rmse"], "max_error_lsb": fi["max_error_lsb"],
            "worst_channel": fi.get("worst_channel"), "worst_channel_error": fi.get("worst_channel_error"),
            "significant": first is not None}


def jump_message(jump: dict | None) -> str | None:
    if not jump:
        return None
    rel = jump["relative_rmse"]
    chan = jump.get("worst_channel_error")
    return (f"int8 loses it at {jump['layer']} ({'+'.join(jump['ops'])}): cosine {jump['cosine']:.3f} "
            f"(was {jump['cosine_before']:.3f} before it), RMSE {'n/a' if rel is None else format(rel, '.2f')} "
            f"of the float tensor's spread, max error {jump['max_error_lsb']:.0f} LSB"
            + ("" if chan is None else f", worst channel {jump['worst_channel']} error {chan:.2f} of its RMS"))


def summary_lines(table: dict) -> list[str]:
    lines = [f"  {'layer':<14}{'ops':<28}{'cosine':>9}{'rel RMSE':>10}{'max LSB':>9}{'worst ch':>10}"
             f"{'LiteRT/TFLM LSB':>17}"]
    for r in table["layers"]:
        fi = r.get("float_vs_int8") or {}
        rt = r.get("litert_vs_tflm") or {}
        lines.append(
            f"  {r['layer']:<14}{'+'.join(r['ops'])[:27]:<28}"
            f"{_f(fi.get('cosine'), '.4f'):>9}{_f(fi.get('relative_rmse'), '.3f'):>10}"
            f"{_f(fi.get('max_error_lsb'), '.0f'):>9}{_f(fi.get('worst_channel_error'), '.2f'):>10}"
            f"{_f(rt.get('max_lsb'), 'd'):>17}")
    return lines


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)

