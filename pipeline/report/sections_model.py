"""Sections 3 to 5 of the report: baselines against the convnet, training, quantization."""

from __future__ import annotations

from pipeline.data.splits import SPLITS
from pipeline.ml.metrics import METRICS as HEADLINE
from pipeline.ml.metrics import delta_text
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
    group_by,
    group_count,
    group_counts,
    isnum,
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

# --------------------------------------------------------------------------- 3. baselines vs the convnet


def _models(run: Run) -> list[tuple[str, dict]]:
    rows = [(str(name), b) for name, b in gd(run.train, "baselines").items() if isinstance(b, dict)]
    if gd(run.train, "metrics"):
        rows.append(("convnet", gd(run.train, "metrics")))
    return rows


def section_baselines(run: Run) -> list:
    if run.train is None:
        return [not_run("make train")]
    t = run.train
    out: list = []
    if g(t, "status") == "failed":
        out.append(para(Mark("The train stage failed: ", "bad"), text(g(t, "failure"))))
    out += _scores_by_split(run)
    out += _per_group_and_new_subjects(t)
    out += _beats_baselines(t)
    out += _naive_split(run)
    per = gd(t, "metrics", "test", "per_class")
    if per:
        out.append(H("The convnet per class"))
        rows = [[name, num(g(c, "support")), num(gn(c, "precision")), num(gn(c, "recall")), num(gn(c, "f1")),
                 num(gn(t, "metrics", "val", "per_class", name, "recall")),
                 num(gn(t, "metrics", "train", "per_class", name, "recall"))] for name, c in per.items()]
        out.append(Table(["class", "test support", "test precision", "test recall", "test F1", "val recall",
                          "train recall"], rows))
    return out


def _scores_by_split(run: Run) -> list:
    """Each model (baselines and the convnet) on each split, with 95% intervals over groups."""
    t = run.train
    out: list = []
    groups = group_counts(gd(t, "split"))
    by = text(group_by(gd(t, "split")))
    few = [sp for sp in SPLITS if isinstance(g(groups, sp), int) and g(groups, sp) < 5]
    caption = (f"95% intervals resample whole {by}s (train {num(g(groups, 'train'))}, val "
               f"{num(g(groups, 'val'))}, test {num(g(groups, 'test'))} {by}s)")
    models = _models(run)
    if not models:
        out.append(para("No scores recorded: the stage stopped before scoring any model."))
    for metric in ("balanced_accuracy", "macro_f1", "mcc", "accuracy") if models else ():
        rows = [[name, *[with_ci(gd(m, sp), metric) for sp in SPLITS]] for name, m in models]
        head = ["model", "train", "validation (used for selection)", "test (unbiased)"]
        if metric in ("balanced_accuracy", "macro_f1"):
            out.append(H(metric.replace("_", " ").replace("f1", "F1")))
            out.append(Table(head, rows, caption))
        else:
            out.append(Table(head, rows, caption,
                             fold=f"{'MCC' if metric == 'mcc' else 'plain accuracy'}, the same way"))
        if metric == "balanced_accuracy":
            out.append(para("The convnet's validation score is ", Mark("used for selection", "warn"),
                            ": the search (and, under a constant learning rate, early stopping) chose on it, so it is "
                            "optimistic. The test score, looked at once (test_ledger.jsonl), is the unbiased "
                            "estimate."))
        if metric == "balanced_accuracy":
            out += _metric_figure(models, metric)
            if few:
                out.append(para(Mark("Few groups: ", "warn"),
                                f"{', '.join(f'{sp} has {groups[sp]}' for sp in few)} {by}(s); an interval "
                                f"over so few {by}s is too narrow to trust (over one it is a point), so none "
                                "is printed: the score of each instead."))
    return out


def _metric_figure(models: list[tuple[str, dict]], metric: str) -> list:
    points = []
    for name, m in models:
        by = {}
        for sp in SPLITS:
            v, ci = gn(m, sp, metric), gl(m, sp, "ci95", metric)
            if v is not None:
                by[sp] = (v, *(ci if len(ci) == 2 else (v, v)))
        points.append((name, by))
    if any(by for _, by in points):
        return [figure(plots.metric_by_split, points, metric, alt="balanced accuracy per model and split")]
    return []


def _per_group_and_new_subjects(t: dict) -> list:
    """The convnet per subject/device, and the leave-one-group-out estimate for a new one."""
    out: list = []
    by_group = gd(t, "by_group")
    if by_group:
        names = sorted({str(k) for sp in SPLITS for k in gd(by_group, sp)})
        rows = [[name, *[(f"{num(gn(by_group, sp, name, 'balanced_accuracy'))} ({num(g(by_group, sp, name, 'n'))})"
                          if g(by_group, sp, name) else "-") for sp in SPLITS]] for name in names[:40]]
        out.append(H("Convnet per subject/device"))
        out.append(Table(["subject/device", "train", "validation", "test"], rows,
                         "balanced accuracy over the classes each holds (windows)"))
    logo = gd(t, "leave_one_group_out")
    if gl(logo, "scores"):
        out.append(H("New-subject estimate: leave one group out (training side)"))
        out.append(Table(["held out", "windows", "balanced accuracy"],
                         [[", ".join(map(str, gl(r, "held_out"))), num(g(r, "windows")), num(gn(r, "balanced_accuracy"))]
                          for r in gl(logo, "scores")],
                         f"{text(g(logo, 'how'))}; the chosen configuration, {num(g(logo, 'epochs'))} epochs each"))
        out.append(para(f"mean {num(gn(logo, 'mean'))}, sd {num(gn(logo, 'sd'))}, range "
                        f"{num(gn(logo, 'min'))}..{num(gn(logo, 'max'))}"))
    elif g(logo, "skipped"):
        out.append(para(Mark("No new-subject estimate: ", "muted"), text(g(logo, "skipped"))))
    return out


def _beats_baselines(t: dict) -> list:
    out: list = []
    deltas = gd(t, "sanity", "baseline_deltas")
    if deltas:
        beats = gd(t, "sanity", "beats_baselines")
        rows = [[name, delta_text(d),
                 verdict(beats.get(name), "yes", "NO")] for name, d in deltas.items() if isinstance(d, dict)]
        out.append(H("Does the convnet beat each baseline? (validation)"))
        out.append(Table(["baseline", "gain in balanced accuracy [95% CI]", "beats it"], rows,
                         "paired cluster bootstrap; beating means the interval is above 0"))
    cv = gd(t, "baselines", "linear", "cv")
    if cv:
        out.append(para(f"Linear baseline, {num(g(cv, 'folds'))}-fold {text(g(cv, 'splitter'))} on the training split: "
                        f"balanced accuracy train {num(gn(cv, 'train_mean'))}, held-out folds {num(gn(cv, 'val_mean'))}."))
    return out


def _naive_split(run: Run) -> list:
    """The audit's split_optimism check: what a random window split would have scored."""
    out: list = []
    out.append(H("What a naive random split would have claimed"))
    so = run.check.get("split_optimism")
    if so:
        d = gd(so, "detail")
        if "random_window_split" in d:
            out.append(Table(["split", f"{text(g(d, 'metric'))} (fast baseline, {num(g(d, 'folds'))}-fold CV on train+val)"],
                             [["random window split (naive)", num(gn(d, "random_window_split"))],
                              [f"this pipeline's split by {text(g(d, 'pipeline_group_by', default=g(d, 'pipeline_unit')))}", num(gn(d, "pipeline_split"))],
                              [Mark("optimism of the naive split", "warn" if not so.get("passed") else "good"),
                               f"{gn(d, 'gap'):+.3f}" if gn(d, "gap") is not None else "n/a"]]))
        out.append(para(verdict(so.get("passed"), "ok", "warning", "warning"), " ", text(so.get("message"))))
    else:
        out.append(para("not measured (no split_optimism check in audit.json)"))
    return out


# --------------------------------------------------------------------------- 4. training


def section_training(run: Run) -> list:
    if run.train is None:
        return [not_run("make train")]
    t = run.train
    s = gd(t, "sanity")
    out: list = []
    if g(t, "status") == "failed":
        out.append(para(Mark("The train stage failed: ", "bad"), text(g(t, "failure"))))
    repro = g(s, "reproducible")
    rows = [
        ["loss at init", num(gn(s, "init_loss")),
         f"{num(gn(s, 'expected_init_loss'))} ± {num(gn(s, 'init_loss_tolerance'), 2)} (entropy of the class prior)",
         verdict(g(s, "init_loss_ok"))],
        [f"overfit one batch of {num(g(s, 'overfit_batch_size'))} ({num(g(s, 'overfit_steps_used', default=g(s, 'overfit_steps')))} of {num(g(s, 'overfit_steps'))} steps)",
         num(gn(s, "overfit_batch_loss"), 4) if gn(s, "overfit_batch_loss", ) is None or gn(s, "overfit_batch_loss") >= 1e-3
         else f"{gn(s, 'overfit_batch_loss'):.1e}", f"< {num(gn(s, 'overfit_max_loss'), 3)}", verdict(g(s, "overfit_ok"))],
        ["reproducible (best trial twice, one seed)", {True: "same metrics", False: "DIFFERENT"}.get(repro, "not checked"),
         "identical", verdict(repro)],
        ["seeded", ", ".join(map(str, gl(s, "seeded"))) or "n/a", f"seed {text(g(s, 'seed'))}", Mark("", "muted")],
    ]
    out.append(H("Sanity checks (Karpathy's recipe)"))
    out.append(Table(["check", "measured", "expected", "verdict"], rows))
    hist = gd(t, "history")
    series = {k: [float(v) for v in gl(hist, k) if isinstance(v, (int, float))]
              for k in ("loss", "val_loss", "accuracy", "val_accuracy")}
    out.append(H("Loss and accuracy of the final fit"))
    if series["loss"]:
        best = g(hist, "best_epoch")
        out.append(figure(plots.training_curves, series, best if isinstance(best, int) else None,
                          gn(s, "init_loss"), gn(s, "expected_init_loss"), alt="training curves, train and validation"))
        out.append(para(f"{num(g(hist, 'epochs_run'))} epochs run, weights of epoch {num(best)} kept (lowest "
                        "validation loss, early stopping)."))
        n = len(series["loss"])
        step = max(1, n // 25)
        keep = sorted(set(range(0, n, step)) | {n - 1} | ({best - 1} if isinstance(best, int) and 0 < best <= n else set()))
        rows = [[str(e + 1), *[num(v[e] if e < len(v) else None, 4) for v in series.values()]] for e in keep]
        out.append(Table(["epoch", "loss", "val loss", "accuracy", "val accuracy"], rows,
                         fold="per epoch" + (f" (every {step}th)" if step > 1 else "")))
    else:
        out.append(para("no training history recorded"))
    hp = gd(t, "model", "hyperparameters") or gd(t, "search", "best", "params")
    if gd(t, "model"):
        out.append(para(f"Final model: {num(g(t, 'model', 'params'))} parameters, input "
                        f"{'x'.join(map(str, gl(t, 'model', 'input_shape'))) or 'n/a'}; "
                        + ", ".join(f"{k} {v}" for k, v in hp.items())))
    else:
        out.append(para(Mark("No model was saved", "muted"), " (float.keras is written only when every check passes)."))
    search = gd(t, "search")
    trials = [x for x in gl(search, "trials") if isinstance(x, dict)]
    out.append(H("Random search"))
    if trials:
        best_trial = g(search, "best", "trial")
        out.append(para(f"{len(trials)} trials of up to {num(g(search, 'epochs'))} epochs, each trained on the "
                        f"training split and scored by {text(g(search, 'space', 'score'))}; trial 0 is the "
                        "configured model. A trial far below the diagonal overfits."))
        pts = [(gn(x, "train_score"), gn(x, "val_score"), x.get("trial") == best_trial) for x in trials]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if pts:
            out.append(figure(plots.search_trials, pts, "balanced accuracy", alt="search trials: validation vs training score"))
        keys = ("learning_rate", "width", "depth", "kernel_size", "dropout", "l2")
        rows = [[Mark(f"{x.get('trial')} (best)", "good") if x.get("trial") == best_trial else text(x.get("trial")),
                 text(x.get("source")), *[text(g(x, "params", k)) for k in keys], num(g(x, "model_params")),
                 num(gn(x, "train_score")), num(gn(x, "val_score")), num(g(x, "epochs"))] for x in trials]
        out.append(Table(["trial", "source", "lr", "width", "depth", "kernel", "dropout", "l2", "params",
                          "train score", "val score", "epochs"], rows, fold="every trial" if len(trials) > 12 else ""))
        out.extend(_search_device(t, search, trials, best_trial))
    else:
        out.append(para("no search trials recorded"))
    timing = gd(t, "timing")
    if timing:
        out.append(para("Time per phase: " + ", ".join(f"{k} {num(gn(timing, k), 1)} s" for k in timing)))
    return out


def _search_device(t: dict, search: dict, trials: list[dict], best_trial) -> list:
    """Where the search ran, each trial's device cost, the Pareto fronts and the seed spread."""
    out: list = []
    if not gd(search, "pareto"):
        return out
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in gd(search, "counts").items() if n)
    out.append(para(f"Ran on {text(g(search, 'engine'))} ({text(g(search, 'address'))}, {num(g(search, 'cpus'))} CPUs): "
                    f"{counts}; {num(gn(search, 'trials_per_min'), 2)} trials per minute. Chosen: trial "
                    f"{text(best_trial)}, {text(g(search, 'chosen_by'))}. Each trial's model converted to int8 "
                    "(calibrated on training windows); RAM is the TFLM arena as exported (64-bit host figure), "
                    "latency is the compiled engine's, predicted from op costs measured on QEMU (pipeline/tflite/latency.py) "
                    "at the board's clock (older runs: MACs x cycles/MAC, TFLM reference kernels). A trial over "
                    "the board's budget stops before training."))
    on_ram = {g(p, "trial") for p in gl(search, "pareto", "ram")}
    on_lat = {g(p, "trial") for p in gl(search, "pareto", "latency")}
    pts = [(gn(x, "val_score"), gn(x, "device", "ram_bytes") / 1024, gn(x, "device", "latency_ms"),
            x.get("trial") in on_ram, x.get("trial") in on_lat, x.get("trial") == best_trial)
           for x in trials if x.get("status") == "ok" and isnum(gn(x, "device", "ram_bytes"))]
    if pts:
        out.append(figure(plots.search_pareto, pts, "balanced accuracy",
                          alt="search: validation score against RAM and against predicted latency"))
    rows = [[text(x.get("trial")), text(x.get("status")), num(gn(x, "val_score")), nbytes(g(x, "device", "ram_bytes")),
             nbytes(g(x, "device", "flash_bytes")), num(g(x, "device", "macs")), num(gn(x, "device", "latency_ms"), 2),
             str(x.get("error") or "; ".join(map(str, gl(x, "over_budget"))))] for x in trials]
    out.append(Table(["trial", "status", "val score", "RAM (arena)", "flash", "MACs", "latency ms (predicted)", "note"],
                     rows, fold="device cost per trial"))
    s = gd(t, "refit_seeds")
    if s:
        out.append(para(f"The chosen configuration refit with seeds {', '.join(map(str, gl(s, 'seeds')))}: validation "
                        f"{num(gn(s, 'mean'))} ± {num(gn(s, 'std'))} (min {num(gn(s, 'min'))}, max "
                        f"{num(gn(s, 'max'))}), beside the search's figure {num(gn(s, 'search_val_score'))} "
                        "(one seed, picked as the best of several trials: expect it to flatter)."))
    return out


# --------------------------------------------------------------------------- 5. quantization


def section_quantization(run: Run) -> list:
    if run.quantize is None:
        return [not_run("make quantize")]
    q = run.quantize
    labels = [str(x) for x in gl(q, "labels")] or run.labels
    val = gd(q, "validation")
    out = _gates_verdict(q) + _validation(val)
    out += _per_layer(q)
    out += _test_and_confusions(run, q, val, labels)
    out += _int8_changes(val)
    cal = gd(q, "calibration")
    if cal:
        out.append(para(f"Calibration: {num(g(cal, 'windows'))} windows of the {text(g(cal, 'split'))} split "
                        f"({text(g(cal, 'sampling'))}; per class "
                        f"{', '.join(f'{k} {v}' for k, v in gd(cal, 'per_class').items())}); "
                        f"{num(g(cal, 'outlier_windows_left_out'))} outlier windows (z > {num(gn(cal, 'outlier_z'), 1)}) left out. "
                        f"Weights {text(g(q, 'conversion', 'weights'))}, activations {text(g(q, 'conversion', 'activations'))}."))
    out.extend(_memory(q))
    return out


def _gates_verdict(q: dict) -> list:
    """Passed, overridden (--accept-drop) or failed: the first thing said of the int8 model."""
    out: list = []
    override = gd(q, "override")
    if override:
        out.append(para(Mark("OVERRIDE (--accept-drop): ", "bad"), text(g(override, "note")), ": ",
                        "; ".join(map(str, gl(override, "failures")))))
    if g(q, "gates_passed") is True or override:
        out.append(para(Mark("Every gate passed: ", "good") if not override else Mark("Exported anyway: ", "warn"),
                        "the int8 model was scored on the test split once and exported."))
    else:
        out.append(para(Mark("The int8 model failed its gates: ", "bad"),
                        "; ".join(map(str, gl(q, "failures"))) or "see quantize_report.json",
                        f" (kept as {g(q, 'rejected_model')} for inspection; nothing was exported)"
                        if g(q, "rejected_model") else ""))
    return out


def _validation(val: dict) -> list:
    """Float, int8 (LiteRT) and TFLM on the validation split: metrics, differences, gates, agreement."""
    out: list = []
    if val:
        out.append(H(f"Float vs int8 vs TFLM on the validation split ({num(g(val, 'windows'))} windows, "
                     f"{num(group_count(val))} groups)"))
        rows = [[m.replace("_", " "), with_ci(gd(val, "float"), m), with_ci(gd(val, "int8"), m),
                 with_ci(gd(val, "tflm"), m)] for m in HEADLINE]
        out.append(Table(["metric", "float (Keras)", "int8 (LiteRT)", "int8 (TFLM)"], rows,
                         f"int8 (LiteRT): {text(g(val, 'int8_runtime'))}; TFLM: the Python runtime of TensorFlow Lite Micro"))
        deltas = {m: d for m, d in gd(val, "delta_int8_minus_float").items() if isinstance(d, dict)}
        mc = gd(val, "mcnemar_float_vs_int8")
        if deltas or mc:
            rows = [[m.replace("_", " "), delta_text(d)]
                    for m, d in deltas.items()]
            if mc:
                rows.append(["McNemar test, float vs int8", f"p = {num(gn(mc, 'p_value'), 3)} (float right and int8 "
                             f"wrong on {num(g(mc, 'a_right_b_wrong'))} windows, the reverse on {num(g(mc, 'a_wrong_b_right'))})"])
            out.append(Table(["int8 − float", "difference [95% CI, paired]"], rows))
        gates = gd(val, "gates")
        if gates:
            out.append(Table(["gate", "value", "rule", "threshold", "verdict"],
                             [[name, num(g(gt, "value"), 4), text(g(gt, "rule")), num(g(gt, "threshold"), 4),
                               verdict(g(gt, "passed"))] for name, gt in gates.items() if isinstance(gt, dict)],
                             "the gates, on validation"))
        ag = gd(val, "agreement")
        ref = gd(val, "litert_vs_tflm", "reference_kernels")
        dflt = gd(val, "litert_vs_tflm", "default_kernels")
        out.append(Table(["compared", "top-1 agreement", "bit-identical outputs", "max LSB difference"], [
            ["float vs int8", pct(gn(ag, "float_int8")), "", ""],
            ["float vs TFLM", pct(gn(ag, "float_tflm")), "", ""],
            ["LiteRT reference kernels vs TFLM (gated)", pct(gn(ref, "top1_agreement")),
             pct(gn(ref, "bit_identical_share")), num(g(ref, "max_lsb_difference"))],
            ["LiteRT default kernels vs TFLM (not gated)", pct(gn(dflt, "top1_agreement")),
             pct(gn(dflt, "bit_identical_share")), num(g(dflt, "max_lsb_difference"))],
        ], text(g(dflt, "why", default=""))))
    else:
        out.append(para("No validation comparison recorded (the stage stopped before it)."))
    return out


def _test_and_confusions(run: Run, q: dict, val: dict, labels: list[str]) -> list:
    """The test split, float (train stage) vs int8 (this stage), and the confusion matrices."""
    out: list = []
    test = gd(q, "test")
    ftest = gd(run.train, "metrics", "test")
    if test:
        out.append(H(f"On the test split ({num(g(test, 'n'))} windows, {num(group_count(test))} groups; one look each)"))
        out.append(Table(["metric", "float (train stage)", "int8 (quantize stage)"],
                         [[m.replace("_", " "), with_ci(ftest, m), with_ci(test, m)] for m in HEADLINE]))
    else:
        out.append(para(Mark("No test look for the int8 model", "muted"),
                        " (only a model that passes every gate is scored on test)."))
    mats = []
    if gl(val, "float", "confusion"):
        mats.append(("float, validation", gl(val, "float", "confusion")))
    if gl(val, "int8", "confusion"):
        mats.append(("int8, validation", gl(val, "int8", "confusion")))
    if mats:
        out.append(H("Confusion matrices"))
        out.append(figure(plots.confusions, mats, labels, alt="confusion matrices, float vs int8 on validation"))
        tmats = [(name, m) for name, m in (("float, test", gl(ftest, "confusion")), ("int8, test", gl(test, "confusion"))) if m]
        if test and tmats:
            out.append(figure(plots.confusions, tmats, labels, alt="confusion matrices, float vs int8 on test"))
        out.append(confusion_table(mats + (tmats if test else []), labels))
    return out


def _int8_changes(val: dict) -> list:
    """What int8 changed per class, its output error and how much of the input range it clips."""
    out: list = []
    per = gd(val, "per_class")
    if per:
        out.append(H("Per class: what int8 changed (validation)"))
        rows = []
        for name, c in per.items():
            d = gn(c, "recall_delta")
            rows.append([name, num(g(c, "support")), num(gn(c, "float_recall")), num(gn(c, "int8_recall")),
                         Mark(f"{d:+.3f}", "bad" if d < -0.01 else "good" if d >= 0 else "warn") if d is not None else "n/a",
                         f"{gn(c, 'f1_delta'):+.3f}" if gn(c, "f1_delta") is not None else "n/a",
                         pct(gn(c, "changed_share"))])
        out.append(Table(["class", "support", "float recall", "int8 recall", "recall Δ", "F1 Δ",
                          "windows that change class"], rows))
    err = gd(val, "output_error")
    clip = gd(val, "input_clipping")
    if err or clip:
        out.append(H("Output error and input range"))
        rows = [["RMSE", num(gn(err, "rmse"), 5)], ["mean absolute error", num(gn(err, "mae"), 5)],
                ["relative L2", num(gn(err, "relative_l2"), 5)], ["cosine similarity", num(gn(err, "cosine_similarity"), 5)]]
        if clip:
            rng = gl(clip, "range")
            rows += [["int8 input range (float units)", f"[{num(gn(clip, 'range', 0))}, {num(gn(clip, 'range', 1))}]" if rng else "n/a"],
                     ["input values outside it (clamped)", pct(gn(clip, "values_share"), 2)],
                     ["windows with a clamped value", pct(gn(clip, "windows_share"), 2)]]
        out.append(Table(["figure", "value"], rows, text(g(err, "compared", default=""))))
    return out


def _per_layer(q: dict) -> list:
    """Where int8 loses accuracy, layer by layer, and what the remedies gave."""
    out: list = []
    rem = gd(q, "remedies")
    if gl(rem, "tried"):
        out.append(H("Input handling: the remedies tried, in order (the first that meets every gate is kept)"))
        out.append(Table(["remedy", "what", "float/int8 agreement", "balanced accuracy int8 − float", "gates"], [
            [text(g(r, "remedy")), text(g(r, "what")), "skipped" if g(r, "skipped") else pct(gn(r, "float_int8_agreement")),
             text(g(r, "skipped")) if g(r, "skipped") else
             delta_text({"delta": g(r, "balanced_accuracy_delta"), "ci95": g(r, "balanced_accuracy_delta_ci95"),
                         "uncertainty": g(r, "balanced_accuracy_delta_uncertainty")}),
             "" if g(r, "skipped") else verdict(g(r, "passed") if "passed" in r else g(r, "gates_passed"), "met", "missed")]
            for r in gl(rem, "tried") if isinstance(r, dict)],
            f"kept: {text(g(rem, 'kept'))}; {text(g(rem, 'qat'))}"))
    layers = gd(q, "per_layer")
    rows = [r for r in gl(layers, "layers") if isinstance(r, dict)]
    if not rows:
        return out
    jump = gd(layers, "jump")
    out.append(H(f"Layer by layer on {num(g(layers, 'windows'))} validation windows"))
    if jump and g(jump, "significant"):
        out.append(para(Mark(f"int8 loses the signal at {text(g(jump, 'layer'))}: ", "bad"),
                        f"cosine {num(gn(jump, 'cosine'), 4)} (was {num(gn(jump, 'cosine_before'), 4)} before it)"))
    out.append(figure(plots.per_layer, [text(g(r, "layer")) for r in rows],
                      [gn(r, "float_vs_int8", "cosine") for r in rows],
                      [g(r, "litert_vs_tflm", "max_lsb") for r in rows], text(g(jump, "layer")),
                      alt="float vs int8 cosine and LiteRT vs TFLM LSB per layer"))
    out.append(Table(["layer", "ops", "float layer", "cosine", "RMSE / spread", "max error (LSB)",
                      "LiteRT vs TFLM max LSB", "values differing"],
                     [[text(g(r, "layer")), "+".join(map(str, gl(r, "ops"))), text(g(r, "float_layer")),
                       num(gn(r, "float_vs_int8", "cosine"), 4), num(gn(r, "float_vs_int8", "relative_rmse"), 3),
                       num(gn(r, "float_vs_int8", "max_error_lsb"), 0), num(g(r, "litert_vs_tflm", "max_lsb")),
                       pct(gn(r, "litert_vs_tflm", "differing_share"))] for r in rows],
                     text(g(layers, "litert_vs_tflm_note"))))
    return out


def confusion_table(mats: list[tuple[str, list]], labels: list[str]) -> Table:
    """The confusion matrices of a figure as numbers (what report.md shows for it)."""
    rows = [[f"{labels[i]} ({name})", *[num(v) for v in row]] for name, m in mats
            for i, row in enumerate(m) if isinstance(row, list) and i < len(labels)]
    return Table(["true \\ predicted", *labels], rows, "rows: true class, columns: predicted",
                 fold="the confusion matrices as numbers")


def _memory(q: dict) -> list:
    mem, board = gd(q, "memory"), gd(q, "board")
    out: list = [H("Flash and RAM against the board budget")]
    fits = gd(board, "fits")
    prof = gd(board, "profile")
    bars = []
    for part, total_key in (("flash", "flash_bytes"), ("ram", "ram_bytes")):
        f = gd(fits, part)
        if gn(f, "used_bytes") is not None and gn(f, "budget_bytes"):
            bars.append((part if part == "flash" else "RAM", int(f["used_bytes"]), int(f["budget_bytes"]),
                         g(prof, total_key)))
    if bars:
        out.append(figure(plots.memory_bars, bars, text(g(prof, "name")), alt="flash and RAM used against the budget"))
    if mem or fits:
        rows = [[part, nbytes(g(fits, part, "used_bytes")), text(g(fits, part, "what")), nbytes(g(fits, part, "budget_bytes")),
                 text(g(board, "budgets", f"{part}_source")), verdict(g(fits, part, "passed"), "fits", "DOES NOT FIT")]
                for part in ("flash", "ram")]
        out.append(Table(["", "used", "what", "budget", "budget from", "verdict"], rows,
                         f"board {text(g(prof, 'title'))} ({text(g(prof, 'mcu'))}, {text(g(prof, 'core'))}, "
                         f"{nbytes(g(prof, 'flash_bytes'))} flash, {nbytes(g(prof, 'ram_bytes'))} RAM)"))
        out.append(para(f"Tensor arena: recorded {nbytes(g(mem, 'arena_recorded_bytes'))}, true minimum "
                        f"{nbytes(g(mem, 'arena_min_bytes'))} by bisection, exported {nbytes(g(mem, 'arena_bytes_exported'))} "
                        f"(+{pct(gn(mem, 'margin'), 0)} margin). {text(g(mem, 'note', default=''))}"))
    else:
        out.append(para("not measured (the stage stopped before it)"))
    macs = gn(q, "macs", "total")
    est = {k: v for k, v in gd(q, "latency_estimates").items() if isinstance(v, dict)}
    if macs is not None:
        out.extend(_latency_blocks(int(macs), est))
    ops = [o for o in gl(q, "ops") if isinstance(o, dict)]
    if ops:
        out.append(Table(["#", "op", "from layer", "MACs", "TFLM kernel", "output shape"],
                         [[text(o.get("index")), text(o.get("op")), text(o.get("layer")), num(g(o, "macs")),
                           text(o.get("tflm")), "x".join(map(str, gl(o, "output_shape")))] for o in ops],
                         f"{len(ops)} ops, every one run by TFLM: {verdict(g(q, 'tflm_ops', 'supported'), 'yes', 'NO').text}",
                         fold="the ops of the int8 model"))
    files = gd(q, "firmware", "files")
    if files:
        out.append(para(f"Firmware exported: {', '.join(files)} (array {text(g(q, 'firmware', 'array'))}, "
                        f"{num(g(q, 'firmware', 'alignment'))}-byte aligned)."))
    return out


def _latency_blocks(macs: int, est: dict) -> list:
    """The latency of each board: the compiled engine's predicted from op costs measured on
    QEMU (pipeline/tflite/latency.py), beside TFLM's MACs x cycles/MAC estimate; a report of an
    older run (reference/optimized kernel estimates only) shows those, labelled."""
    out = [H("Compute and latency")]
    first = next(iter(est.values()), {})
    if "ms" not in first:  # an older quantize report
        rows = [[Mark(f"{name} (configured)", "good") if e.get("configured") else name,
                 "n/a" if gn(e, "clock_hz") is None else f"{e['clock_hz'] / 1e6:g} MHz",
                 num(gn(e, "reference_kernels_ms"), 2), num(gn(e, "optimized_kernels_ms"), 2)] for name, e in est.items()]
        out.append(para(f"{macs:,} multiply-accumulates per inference. Latency is ", Mark("estimated, not measured", "warn"),
                        f": MACs × cycles per MAC / clock; {text(g(first, 'source'))}."))
        if rows:
            out.append(Table(["board", "clock", "ms, reference kernels", "ms, optimized kernels"], rows,
                             fold="estimated latency on each board"))
        return out
    rows = [[Mark(f"{name} (configured)", "good") if e.get("configured") else name,
             "n/a" if gn(e, "clock_hz") is None else f"{e['clock_hz'] / 1e6:g} MHz", num(gn(e, "ms"), 2),
             num(g(e, "instructions")) if g(e, "instructions") else "-", num(gn(e, "tflm_estimate_ms"), 2)]
            for name, e in est.items()]
    engine = text(g(first, "engine"))
    out.append(para(f"{macs:,} multiply-accumulates per inference. Latency of the {engine} engine: ",
                    Mark(text(g(first, "label")), "warn"), f"; {text(g(first, 'source'))}. "
                    "The TFLM column is MACs × 8 cycles/MAC (MLPerf Tiny, TFLM reference kernels), an estimate "
                    "for the firmware that runs TFLM ([device] engine = \"tflm\"). `tinyml profile` measures it on QEMU."))
    out.append(Table(["board", "clock", f"ms, {engine} engine", "instructions", "ms, TFLM (MACs x 8)"], rows,
                     fold="latency on each board"))
    return out
