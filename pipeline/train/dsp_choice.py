"""``[dsp] block = "auto"``: the front end chosen by the search, before the model's search.

Every candidate of ``pipeline.dsp.auto.candidates`` (raw always among them; MFE / MFCC for
audio, spectral for motion, their main parameters chosen from the training windows) is
one trial of the search: the configured model (the search's trial 0) trained for
``[train] search_epochs`` on the block's features of the training split, scored on
validation, and costed on the board, DSP included: the model's int8 flash, arena and MACs
(as every trial), plus the DSP's instructions and RAM measured on the emulated Cortex-M4
(``pipeline.dsp.cost``). A candidate whose model arena plus DSP RAM exceeds the board's RAM
budget is out. The chosen block is the highest validation score; a tie (to 0.001) goes to
the fewer DSP instructions (raw has none). Raw being a candidate, a block is only chosen
when it is at least as good as raw on validation.

The block chosen and its parameters replace ``cfg.dsp`` (so the run's config.toml, the
quantize stage and the device evaluation use them); the report keeps every candidate.
"""

from __future__ import annotations

import dataclasses

from pipeline.data.splits import Prepared
from pipeline.dsp import auto, blocks
from pipeline.dsp import cost as dsp_cost
from pipeline.ml import model as M
from pipeline.train.engine import Engine, TrialTask
from pipeline.train.search import device_budget, evaluate_trial, trial_data

TIE = 0.001  # validation balanced accuracy closer than this is a tie: the cheaper DSP wins


def block_candidates(prepared: Prepared, cfg) -> list[dict]:
    """The candidate blocks for these windows (``pipeline.dsp.auto.candidates``), raw first."""
    w = prepared.windows
    return auto.candidates(cfg.dsp, prepared.dataset.rate_hz, w["train"].X)


def block_trial(task: TrialTask, data: dict) -> dict:
    """Candidate ``task.index``'s fit (on an engine: each candidate has its own features)."""
    record = evaluate_trial(task, data["data"][task.index])
    record["block"] = data["blocks"][task.index]
    return record


def choose_block(prepared: Prepared, cfg, cands: list[dict] | None = None,
                 engine: Engine | None = None, out=print) -> tuple[dict, dict | None]:
    """Score every candidate block on ``engine`` (side by side on Ray); set ``cfg.dsp`` to the
    chosen one. Returns the report's record and the chosen block's fit: the configured model
    on the chosen features for ``[train] search_epochs`` from the seed, which is the search's
    trial 0 to the bit (same task, same data), so the search reuses it (None: raw only)."""
    tc, w, rate = cfg.train, prepared.windows, prepared.dataset.rate_hz
    cands = cands if cands is not None else block_candidates(prepared, cfg)
    steps, channels = (w["train"].X.shape[1:] + (1,))[:2]
    if len(cands) == 1:
        cfg.dsp = cands[0]["dsp"]
        return {"chosen": "raw", "why": f"only raw fits this data ({auto.kind(rate, w['train'].X.shape[1:])} "
                "windows: no rate, or not a time series)", "candidates": [_entry(cands[0], None, None)]}, None
    costs = dsp_cost.measure([blocks.params(c["dsp"], rate, steps, channels) for c in cands[1:]])
    costs = [{"instructions": 0, "ram_bytes": 0}] + (costs or [None] * (len(cands) - 1))
    budget = device_budget(cfg.quantize)
    k = len(prepared.dataset.label_names)
    engine = engine or Engine("sequential")
    out(f"train: [dsp] block = \"auto\": {len(cands)} front ends, each with the configured model for "
        f"{tc.search_epochs} epochs, scored on validation (on {engine.name})")
    datas = []
    for cand in cands:
        p = blocks.featurize(prepared, dataclasses.replace(cfg, dsp=cand["dsp"]), cand["block"])
        train, val = p.windows["train"], p.windows["val"]
        datas.append(trial_data(train, val, k, M.class_priors(train.y, k), tc, budget, cfg.seed))
    # Each candidate's configured model: the kernel and head of time-frequency features for
    # mfe, mfcc and spectrogram (pipeline/ml/model.py KERNEL_AUTO, HEADS).
    tasks = [TrialTask(i, M.ModelParams.from_config(tc, time_frequency=c["block"] in blocks.IMAGE_BLOCKS), "block",
                       tc.search_epochs, cfg.seed) for i, c in enumerate(cands)]
    with engine:
        records, interrupted = engine.run(tasks, {"data": datas, "blocks": [c["block"] for c in cands]},
                                          "front end", block_trial, out)
    if interrupted:
        raise KeyboardInterrupt
    entries = []
    for cand, record, dc in zip(cands, records, costs, strict=True):
        entries.append(_entry(cand, record, dc, budget))
        if dc:  # the fit's figures were on its progress line
            out(f"train:   {cand['block']} {_short(entries[-1])}: DSP {dc['instructions']:,} instructions, "
                f"{dc['ram_bytes']:,} B")
    ok = [e for e in entries if e["status"] == "ok"]
    if not ok:
        cfg.dsp = cands[0]["dsp"]
        return {"chosen": "raw", "why": "no candidate block finished within the budget: raw",
                "candidates": entries}, records[0]
    best = max(ok, key=lambda e: (round(e["val_score"] / TIE), -(e["dsp_cost"] or {}).get("instructions", 0)))
    chosen = cands[entries.index(best)]
    cfg.dsp = chosen["dsp"]
    raw = entries[0]
    why = (f"highest validation balanced accuracy: {best['block']} {best['val_score']:.3f} against raw "
           f"{raw['val_score']:.3f}" if raw["status"] == "ok" else f"highest validation balanced accuracy "
           f"{best['val_score']:.3f} (raw: {raw['status']})") + f"; {chosen['why']}"
    if costs[1] is None:
        why += "; DSP cost not measured (arm-none-eabi-gcc or qemu-system-arm missing)"
    return {"chosen": best["block"], "parameters": best["parameters"], "why": why, "candidates": entries,
            "rule": f"highest validation {'balanced accuracy'} with model arena + DSP RAM within the board's RAM "
                    f"budget; closer than {TIE} a tie, the fewer DSP instructions win; raw always a candidate",
            "dsp_cost_source": "measured on QEMU mps2-an386 (Cortex-M4), -icount shift=0, one window"
                               if costs[1] is not None else "not measured"}, records[entries.index(best)]


def _short(entry: dict) -> str:
    shown = blocks.main_parameters(entry["parameters"])
    return f"({shown})" if shown else ""


def _entry(cand: dict, record: dict | None, dc: dict | None, budget: dict | None = None) -> dict:
    entry = {"block": cand["block"], "parameters": blocks.resolved(cand["dsp"], cand["block"]), "why": cand["why"],
             "dsp_cost": dc}
    if record is None:
        return {**entry, "status": "only candidate"}
    entry.update({key: record.get(key) for key in ("status", "val_score", "train_score", "val_loss", "epochs",
                                                    "model_params", "device", "error", "over_budget")})
    if entry["status"] == "ok" and dc and budget:
        total = record["device"]["ram_bytes"] + dc["ram_bytes"]
        entry["ram_bytes_with_dsp"] = total
        if total > budget["ram_bytes"]:
            entry.update(status="over_budget", over_budget=[f"model arena + DSP RAM {total} B > budget "
                                                            f"{budget['ram_bytes']} B"])
    return {key: v for key, v in entry.items() if v is not None or key in ("dsp_cost",)}
