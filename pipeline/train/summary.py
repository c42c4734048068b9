"""What the train stage prints when it is done: the front end, the scores with their
intervals per split, the checks and the search, read from its report (``train_report.json``)."""

from __future__ import annotations

from pipeline.data.repairs import repair_lines
from pipeline.data.splits import SPLITS

CONVNET = "convnet"
HEADLINE = ("balanced_accuracy", "macro_f1")


def cell(m: dict, key: str) -> str:
    note = (m.get("uncertainty") or {}).get("text", {}).get(key)
    if note:
        return f"{m[key]:.3f} {note}"
    lo, hi = m["ci95"][key]
    return f"{m[key]:.3f} [{lo:.2f},{hi:.2f}]"


def dsp_lines(dsp: dict) -> list[str]:
    """The front end the model reads and, when chosen by the search, why and against what."""
    if not dsp:
        return []
    lines = [f"DSP block: {dsp['block']} {tuple(dsp['window_shape'])} -> {tuple(dsp['feature_shape'])}"]
    auto = dsp.get("auto")
    if auto:
        lines[0] += f", chosen ([dsp] block = \"auto\"): {auto['why']}"
        for c in auto["candidates"]:
            figs = f"val {c['val_score']:.3f}" if c.get("val_score") is not None else c["status"]
            dc = c.get("dsp_cost")
            cost = f", DSP {dc['instructions']:,} instructions, {dc['ram_bytes']:,} B" if dc else ""
            model = (f", model {c['device']['macs']:,} MACs, arena {c['device']['ram_bytes']:,} B"
                     if c.get("device") else "")
            lines.append(f"  {c['block']:<12}{figs}{model}{cost}")
    return lines


def summary_lines(report: dict) -> list[str]:
    """The terminal summary: baselines and convnet side by side, train / val / test."""
    rows = [(name, b) for name, b in report["baselines"].items()] + [(CONVNET, report["metrics"])]
    width = max(len(name) for name, _ in rows) + 4
    group_by = report["split"]["group_by"]
    # What was repaired in the data first: the scores below are of the repaired data.
    lines = repair_lines(report["split"].get("repairs"))
    lines += dsp_lines(report.get("dsp") or {})
    for key in HEADLINE:
        lines.append("")
        lines.append(f"{key.replace('_', ' ')}, 95% CI ({group_by}s resampled)")
        lines.append("  " + "model".ljust(width) + "".join(s.ljust(20) for s in SPLITS))
        for name, m in rows:
            cells = [cell(m[s], key) for s in SPLITS]
            lines.append("  " + name.ljust(width) + "".join(c.ljust(max(20, len(c) + 2)) for c in cells))
    lines.append("convnet val: used for selection (the search and, under a constant rate, early stopping chose on it), "
                 "so optimistic; test is the unbiased estimate, looked at once (test_ledger.jsonl)")
    for s in SPLITS:
        per = (report["metrics"][s].get("uncertainty") or {}).get("per_group")
        if per and not (group_by == "group" and report.get("by_group")):  # else the table below says it
            lines.append(f"convnet {s} per {group_by}: " + ", ".join(
                f"{c} {v['balanced_accuracy']:.3f} ({v['n']} windows)" for c, v in per.items()))
    by_group = report.get("by_group")
    if by_group:
        lines.append("")
        lines.append("convnet balanced accuracy per subject/device (windows):")
        for s in SPLITS:
            lines.append(f"  {s:<6}" + "; ".join(f"{g} {v['balanced_accuracy']:.3f} ({v['n']})"
                                               for g, v in by_group[s].items()))
    logo = report.get("leave_one_group_out")
    if logo and logo.get("scores"):
        lines.append(f"leave-one-group-out ({len(logo['scores'])} folds, the chosen configuration, the new-subject/"
                     f"device estimate): balanced accuracy mean {logo['mean']:.3f}, sd {logo['sd']:.3f}, "
                     f"range {logo['min']:.3f}..{logo['max']:.3f}"
                     + (f"; it also {logo['used_for_selection']}" if logo.get("used_for_selection") else ""))
    cv = report["baselines"].get("linear", {}).get("cv")
    if cv:
        lines.append(f"linear, {cv['folds']}-fold group-aware CV on train: balanced accuracy train "
                     f"{cv['train_mean']:.3f}, val {cv['val_mean']:.3f}")
    s = report["sanity"]
    repro = {True: "yes", False: "NO", None: "not checked"}[s["reproducible"]]
    lines.append("")
    lines.append(f"sanity: seed {s['seed']}; loss at init {s['init_loss']:.3f} (expected "
                 f"{s['expected_init_loss']:.3f}) ok; one batch of {s['overfit_batch_size']} "
                 f"overfitted to loss {s['overfit_batch_loss']:.2g} in {s.get('overfit_steps_used', s['overfit_steps'])} steps ok; reproducible: {repro}")
    lost = [name for name, ok in s["beats_baselines"].items() if not ok]
    gains = ", ".join(f"{name} {d['delta']:+.2f}" for name, d in s["baseline_deltas"].items())
    verdict = "yes" if not lost else (f"NO, not {', '.join(lost)} (stated, not failed: only the "
                                      "input-independent baselines are a gate)")
    lines.append(f"beats every baseline on validation: {verdict} (balanced accuracy gain: {gains}; "
                 "beating means its 95% CI is above 0)")
    t = report["search"]["best"]
    lines.append(f"search: {len(report['search']['trials'])} trials; best trial {t['trial']} "
                 f"val {t['val_score']:.3f} (used for selection; train {t['train_score']:.3f}); refit model "
                 f"{report['model']['params']} parameters, weights of epoch "
                 f"{report['refit']['best_epoch']} of {report['refit']['epochs']}")
    lines.extend(search_lines(report))
    if report["test_look"]["look"] > 1:
        lines.append(f"warning: test split looked at {report['test_look']['look']} times for this purpose")
    return lines


def search_lines(report: dict) -> list[str]:
    """Where the search ran, the chosen trial's device cost, the fronts and the seed spread."""
    search, lines = report["search"], []
    t, c = search["best"], search["best"].get("device") or {}
    counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in search.get("counts", {}).items() if n)
    lines.append(f"search ran on {search.get('engine')} ({search.get('address')}): {counts}; "
                 f"{search.get('trials_per_min')} trials/min")
    if c:
        lines.append(f"chosen trial {t['trial']} ({search.get('chosen_by')}): {c['ram_bytes']:,} B RAM (TFLM arena), "
                     f"{c['flash_bytes']:,} B flash, {c['macs']:,} MACs, {c['latency_ms']:.2f} ms estimated on {c['board']}")
    for cost, unit in (("ram_bytes", "B"), ("latency_ms", "ms")):
        front = search.get("pareto", {}).get(cost.split("_")[0], [])
        lines.append(f"Pareto front, val score vs {cost}: " + ", ".join(
            f"trial {p['trial']} {p['val_score']:.3f} @ {p[cost]:,} {unit}" for p in front))
    s = report.get("refit_seeds")
    if s:
        lines.append(f"chosen configuration over seeds {s['seeds']}: val {s['mean']:.3f} ± {s['std']:.3f} "
                     f"(min {s['min']:.3f}, max {s['max']:.3f}); the search's figure {s['search_val_score']:.3f}")
    return lines
