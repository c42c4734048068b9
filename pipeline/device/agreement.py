"""Agreement as a real check: the int8 outputs of the firmware's compiled C against the host
references, output by output, on every test window.

The firmware prints each probability as ``(q - zero point) x scale`` with 6 decimals; the
int8 ``q`` is read back from it exactly (scales above 1e-6), as the QEMU path already did
(``scoring.build_device_report``'s ``int8_outputs_identical``). Two host references:

- TFLM's Python interpreter (``tflite_micro``): the arithmetic the compiled engine is
  written to match byte for byte (firmware_bridge/compiler/, tests/test_compiler.py). This is
  the gate: one output that differs is an error naming its window and output.
- LiteRT's reference kernels (``BUILTIN_REF``): another implementation of the same ops.
  Counted and reported, with how many of its differences TFLM shares (they are LiteRT's own
  rounding, not the firmware's: on the tiny test model 2 of 160 outputs, one step apart, in
  the softmax; tests/test_host_board.py).
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import GateFailed

GATE = "tflm"


def to_int8(probabilities: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Printed (or dequantized) probabilities back to the int8 values they came from."""
    return (np.rint(np.asarray(probabilities, dtype=np.float64) / scale) + zero_point).astype(np.int64)


def compare(device_q: np.ndarray, reference_q: np.ndarray, window_ids, label_names) -> dict:
    """Counts of byte-identical outputs, and the first that differs (window order, then output)."""
    device_q, reference_q = np.asarray(device_q, np.int64), np.asarray(reference_q, np.int64)
    same = device_q == reference_q
    section = {"outputs": int(same.size), "outputs_identical": int(same.sum()),
               "windows": int(same.shape[0]), "windows_identical": int(same.all(axis=1).sum())}
    differ = np.argwhere(~same)
    if len(differ):
        w, k = (int(i) for i in differ[0])
        section["first_difference"] = {"window_id": str(window_ids[w]), "window_index": w, "output": k,
                                       "label": label_names[k], "device_int8": int(device_q[w, k]),
                                       "reference_int8": int(reference_q[w, k])}
    return section


def litert_reference(run, X) -> np.ndarray | str:
    """The int8 outputs of LiteRT's reference kernels on the windows, inputs quantized as the
    firmware does; a one-line reason instead when LiteRT cannot run the model."""
    from pipeline.tflite.litert import host_interpreter, run_litert
    from pipeline.tflite.runtime import model_input, read_input_normalization

    data = (run / "int8.tflite").read_bytes()
    try:
        Interpreter, _, _ = host_interpreter()
        scale, zero_point = Interpreter(model_content=data).get_input_details()[0]["quantization"]
        x_q = model_input(X, float(scale), int(zero_point), read_input_normalization(data))
        return run_litert(data, x_q, reference=True).astype(np.int64)
    except (ImportError, RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def summary(section: dict) -> str:
    """One line for the terminal."""
    t = section["tflm"]
    line = (f"int8 outputs byte-identical to TFLM: {t['outputs_identical']:,} of {t['outputs']:,} "
            f"({t['windows_identical']} of {t['windows']} windows)")
    lit = section.get("litert_reference_kernels", {})
    if "outputs" in lit:
        line += f"; to LiteRT's reference kernels: {lit['outputs_identical']:,} of {lit['outputs']:,}"
        if lit["outputs_identical"] < lit["outputs"]:
            line += (f" (TFLM differs from LiteRT on {lit['differences_tflm_shares']} of the "
                     f"{lit['outputs'] - lit['outputs_identical']} that differ)")
    return line


def int8_agreement(device_probs: np.ndarray, host_tflm_probs: np.ndarray, litert_q, window_ids, label_names,
                   output_quantization: tuple[float, int]) -> dict:
    """device_report.json's ``int8_agreement``: byte-identical outputs against TFLM (the gate)
    and LiteRT's reference kernels (reported)."""
    scale, zero_point = output_quantization
    device_q = to_int8(device_probs, scale, zero_point)
    tflm_q = to_int8(host_tflm_probs, scale, zero_point)
    section = {"gate": GATE, "required": 1.0, "output_scale": scale, "output_zero_point": zero_point,
               "tflm": compare(device_q, tflm_q, window_ids, label_names)}
    if isinstance(litert_q, str):
        section["litert_reference_kernels"] = {"not_run": litert_q}
    else:
        lit = compare(device_q, litert_q, window_ids, label_names)
        lit["differences_tflm_shares"] = int(((device_q != litert_q) & (tflm_q != litert_q)).sum())
        lit["note"] = "reported, not gated: LiteRT's reference kernels round some outputs differently from TFLM"
        section["litert_reference_kernels"] = lit
    tflm = section["tflm"]
    section["passed"] = tflm["outputs_identical"] == tflm["outputs"]
    return section


def check(section: dict | None) -> None:
    """Below 100% byte-identical outputs against TFLM: an error naming the first that differs."""
    if not section or section.get("passed", True):
        return
    tflm, first = section["tflm"], section["tflm"]["first_difference"]
    raise GateFailed(
        f"the firmware's int8 outputs are byte-identical to TFLM's on {tflm['outputs_identical']} of "
        f"{tflm['outputs']} outputs ({tflm['windows_identical']} of {tflm['windows']} windows); first: window "
        f"{first['window_id']!r}, output {first['output']} ({first['label']!r}): device {first['device_int8']}, "
        f"TFLM {first['reference_int8']}",
        hint="the compiled model must be TFLM's arithmetic byte for byte: compare it layer by layer "
             "(firmware_bridge.compiler.run_runner_debug) on that window")
