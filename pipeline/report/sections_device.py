"""Section 6 of the report: the model on the device, beside the host int8 model."""

from __future__ import annotations

from pipeline.ml.metrics import METRICS as HEADLINE
from pipeline.report import plots
from pipeline.report.blocks import (
    H,
    Mark,
    Table,
    figure,
    g,
    gd,
    gl,
    gn,
    nbytes,
    not_run,
    num,
    para,
    pct,
    text,
    verdict,
    with_ci,
)
from pipeline.report.run import Run
from pipeline.report.sections_model import confusion_table

# --------------------------------------------------------------------------- 6. on the device


def section_device(run: Run) -> list:
    d = run.device
    if d is None:
        if run.device_lines:
            total = g(run.splits, "windows", "test")
            torn = f" ({run.device_torn} torn line(s) dropped)" if run.device_torn else ""
            if isinstance(total, int) and len(run.device_lines) >= total:
                return [para(Mark("Not scored yet: ", "warn"), f"device_eval.jsonl holds all {total} test windows{torn}, "
                             "but device_report.json is missing; tinyml eval scores them.")]
            return [para(Mark("Evaluation incomplete: ", "warn"),
                         f"device_eval.jsonl holds {len(run.device_lines)} of {num(total)} test windows{torn}; "
                         "make flash (or tinyml eval) resumes where it stopped.")]
        return [not_run("make flash")]
    labels = run.labels
    out: list = []
    info = {k: v for k, v in gd(d, "device").items() if isinstance(v, (str, int, float, bool))}
    if info:
        out.append(Table(["device", ""], [[k, text(v)] for k, v in info.items()], fold="the device" if len(info) > 8 else ""))
    qtest = gd(run.quantize, "test")
    m = gd(d, "metrics")
    out.append(H(f"On-device metrics ({num(g(d, 'windows'))} test windows)"))
    out.append(Table(["metric", "device", "host int8 (quantize stage)"],
                     [[k.replace("_", " "), with_ci(m, k), with_ci(qtest, k)] for k in HEADLINE]))
    ag = gd(d, "agreement_with_host_int8")
    req = gn(ag, "required")
    top1 = gn(ag, "top1")
    ok = g(ag, "passed") if top1 is not None else None
    out.append(para("Agreement with the host int8 model: ",
                    verdict(ok, pct(top1, 2) if top1 is not None else "n/a", pct(top1, 2)),
                    f" top-1 ({num(g(ag, 'differing'))} windows differ; largest probability difference "
                    f"{num(gn(ag, 'max_abs_probability_difference'), 4)}"
                    f"{f'; required {pct(req, 0)}' if req is not None else ''})."))
    out += _byte_identity(d)
    mats = [(name, mat) for name, mat in (("host int8, test", gl(qtest, "confusion")), ("device, test", gl(m, "confusion"))) if mat]
    if mats:
        out.append(figure(plots.confusions, mats, labels, alt="confusion matrices, host int8 vs device on test"))
        out.append(confusion_table(mats, labels))
    differ = [x for x in gl(ag, "samples_that_differ") if isinstance(x, dict)]
    if not differ and g(ag, "differing") == 0:
        out.append(para("No window differs: the device gave the host's top-1 class on every test window."))
    if differ:
        out.append(H("Windows where the device and the host disagree"))
        out.append(Table(["window", "label", "device", "host int8", "device probabilities", "host probabilities"],
                         [[text(x.get("window_id")), text(x.get("label")), text(x.get("device")), text(x.get("host_int8")),
                           " ".join(num(p, 3) for p in gl(x, "device_probabilities")),
                           " ".join(num(p, 3) for p in gl(x, "host_probabilities"))] for x in differ[:50]],
                         fold="the windows" if len(differ) > 10 else ""))
    timing = {k: v for k, v in gd(d, "timing_reported_by_device").items()}
    out.append(H("Timing"))
    rows = [[k, *(num(gn(v, s), 2) for s in ("mean", "p50", "p95", "max")), num(g(v, "n"))]
            for k, v in timing.items() if isinstance(v, dict)]
    if rows:
        out.append(Table(["reported by the device", "mean ms", "p50", "p95", "max", "n"], rows, text(g(d, "timing_note", default=""))))
    else:
        out.append(para("The device reported no timing."))
    thr = {k: v for k, v in gd(d, "throughput").items() if isinstance(v, (int, float, str))}
    if thr:
        out.append(para("Throughput over serial: " + ", ".join(f"{k.replace('_', ' ')} {text(v)}" for k, v in thr.items()) + "."))
    out.append(para(f"device_eval.jsonl: {len(run.device_lines)} result lines"
                    + (f", {run.device_torn} torn line(s) dropped." if run.device_torn else ".")))
    out += _measured_on_emulated_m4(gd(d, "measured_on_emulated_cortex_m4"))
    return out


def _byte_identity(d: dict) -> list:
    """The firmware's int8 outputs against TFLM's (gated) and LiteRT's reference kernels
    (reported), and its DSP features against the host library's (gated), window by window."""
    rows = []
    ia = gd(d, "int8_agreement")
    for key, what, gated in (("tflm", "int8 outputs vs TFLM (host)", True),
                             ("litert_reference_kernels", "int8 outputs vs LiteRT reference kernels", False)):
        r = gd(ia, key)
        if r:
            same, total = g(r, "outputs_identical"), g(r, "outputs")
            rows.append([what, f"{num(same)} of {num(total)} outputs; {num(g(r, 'windows_identical'))} of "
                         f"{num(g(r, 'windows'))} windows", verdict(same == total) if gated else "reported, not gated"])
    f = gd(d, "dsp_features")
    if f:
        rows.append([f"[dsp] {text(g(f, 'block'))} features vs the host library",
                     f"{num(g(f, 'identical'))} of {num(g(f, 'windows'))} windows ({num(g(f, 'values_per_window'))} "
                     "float32 values each, bit for bit)", verdict(g(f, "differing") == 0)])
    if not rows:
        return []
    return [H("Byte for byte"), Table(["compared", "identical", ""], rows,
                                      "the device's own bytes against the host's, on every test window")]


def _measured_on_emulated_m4(m: dict) -> list:
    """The firmware's own figures (tinyml flash --device qemu), beside the MAC-based estimate."""
    if not m:
        return []
    est = gd(m, "mac_estimate")
    rows = [
        ["flash (text + data of the ELF)", nbytes(g(m, "flash_bytes_text_plus_data")), Mark("measured", "good")],
        ["static RAM (data + bss of the ELF)", nbytes(g(m, "static_ram_bytes_data_plus_bss")), Mark("measured", "good")],
        ["stack high-water mark", f"{nbytes(g(m, 'stack_high_water_bytes'))} of {nbytes(g(m, 'stack_size_bytes'))}",
         Mark("measured", "good")],
        ["instructions per inference", num(g(m, "instructions_per_inference")), Mark("measured", "good")],
    ]
    if est:
        rows += [
            ["cycles per inference, reference kernels", num(g(est, "estimated_cycles_reference_kernels")),
             Mark("estimated", "warn")],
            ["cycles per inference, optimized kernels", num(g(est, "estimated_cycles_optimized_kernels")),
             Mark("estimated", "warn")],
        ]
    return [H("Measured on an emulated Cortex-M4"),
            Table(["", "value", ""], rows, f"the firmware itself on {text(g(m, 'machine'))}"),
            para(text(g(m, "instructions_note", default="")) + ". "
                 + (f"Estimates: {num(g(est, 'macs'))} MACs × cycles per MAC ({text(g(est, 'source'))})." if est else ""))]
