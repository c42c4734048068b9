"""The report's features section: the DSP block the model reads (chosen by the search when
``[dsp] block = "auto"``, with every candidate), a spectrogram per class (MFE, MFCC,
spectrogram) and the feature distributions per split. The features are computed here from
the split's raw windows with the same C library as training (``pipeline.dsp``)."""

from __future__ import annotations

import numpy as np

from pipeline.data.splits import SPLITS
from pipeline.dsp import blocks
from pipeline.report import plots
from pipeline.report.blocks import H, Mark, Table, figure, g, gd, gl, nbytes, not_run, num, para
from pipeline.report.run import Run

MAX_WINDOWS = 2000  # per split, for the distributions: a sample of evenly spaced windows beyond


def section_features(run: Run) -> list:
    dsp = gd(run.train, "dsp")
    if run.train is None:
        return [not_run("make train", "the DSP block is chosen and recorded by the train stage")]
    if not dsp:
        return [para("DSP block: n/a (train_report.json records none: a run from before [dsp], or a damaged report).")]
    out = [para(f"The model reads {dsp.get('block')}: windows {tuple(gl(dsp, 'window_shape'))} become "
                f"{tuple(gl(dsp, 'feature_shape'))}. Parameters: "
                + (", ".join(f"{k} = {v}" for k, v in gd(dsp, "parameters").items()) or "none") + ".")]
    auto = gd(dsp, "auto")
    if auto:
        out.append(para("Chosen by the search ([dsp] block = \"auto\"): ", g(auto, "why", default=""),
                        ". Rule: ", g(auto, "rule", default="")))
        out.append(_candidates(auto))
    if run.data is None or run.config is None or dsp.get("block") == "raw":
        if dsp.get("block") != "raw":
            out.append(para(Mark("features not drawn: ", "muted"), run.data_why))
        return out
    return out + _pictures(run, dsp)


def _candidates(auto: dict) -> Table:
    rows = []
    for c in gl(auto, "candidates"):
        dc, dev = c.get("dsp_cost") or {}, c.get("device") or {}
        params = blocks.main_parameters(c.get("parameters") or {})
        rows.append([f"{c['block']} {params}".strip(), num(c.get("val_score")), c.get("status", ""),
                     f"{dc['instructions']:,}" if dc else "not measured", nbytes(dc.get("ram_bytes")) if dc else "",
                     f"{dev['macs']:,}" if dev else "", nbytes(dev.get("ram_bytes")) if dev else ""])
    return Table(["candidate", "val balanced accuracy", "status", "DSP instructions (QEMU)", "DSP RAM",
                  "model MACs", "model arena"], rows, caption=g(auto, "dsp_cost_source", default=""))


def _features(run: Run, split: str) -> np.ndarray:
    w = run.data.windows[split]
    X = w.X
    if len(X) > MAX_WINDOWS:
        X = X[np.linspace(0, len(X) - 1, MAX_WINDOWS).astype(int)]
    return blocks.features(X, run.config.dsp, run.data.dataset.rate_hz)


def _pictures(run: Run, dsp: dict) -> list:
    block = dsp["block"]
    feats = {s: _features(run, s) for s in SPLITS if s in run.data.windows and len(run.data.windows[s])}
    out = []
    if block in blocks.IMAGE_BLOCKS and "train" in feats:
        y = run.data.windows["train"].y
        y = y[np.linspace(0, len(y) - 1, len(feats["train"])).astype(int)] if len(y) > len(feats["train"]) else y
        panels = [(name, feats["train"][y == k].mean(axis=0)[..., 0]) for k, name in enumerate(run.labels[:20])
                  if np.any(y == k)]
        out.append(H(f"A {block} per class"))
        out.append(figure(plots.feature_images, panels, f"Mean {block} of each class's training windows",
                          {"mfcc": "coefficient", "mfe": "mel filter"}.get(block, "FFT bin"),
                          alt=f"mean {block} per class"))
    out.append(H("Feature distributions per split"))
    flat = {s: (F.mean(axis=1)[..., 0] if block in blocks.IMAGE_BLOCKS else F.reshape(len(F), -1))
            for s, F in feats.items()}
    what = "mean over frames per " + {"mfcc": "coefficient", "mfe": "mel filter"}.get(block, "FFT bin") \
        if block in blocks.IMAGE_BLOCKS else "feature (axes x [RMS, skewness, kurtosis, spectral bins])"
    out.append(figure(plots.feature_distributions, flat, what,
                      "Each split's features: a shift between splits is what the model meets on new groups",
                      alt="feature distributions per split"))
    return out
