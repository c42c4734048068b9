"""The train stage, on a split the audit stage has passed: baselines, sanity checks, random
search, the float model.

Karpathy's recipe, enforced: dumb baselines on the same splits and metrics; the loss at
init checked against the entropy of the class prior; one batch overfitted; seeds fixed
and a run repeated to prove it; Adam, cosine from 3e-3 (decided on fsdd: config.py); random
search scored on validation;
the best configuration refit, then scored on the test split once (and the look recorded
in ``test_ledger.jsonl``). A failed check stops the stage with `GateFailed`; its report is
still written, with the failure, and no ``float.keras``.

Writes ``float.keras``, ``train_report.json`` and ``config.toml`` in the run directory. It
never runs the audit itself (no stage imports another): the CLI runs ``pipeline.audit.stage``
first and hands its result over; the report's ``timing.audit`` is the time this stage took
to get the audited split.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import (
    atomic_path,
    read_json,
    remove_downstream,
    sha256_file,
    write_json,
)
from pipeline.core.boards import get_board
from pipeline.core.config import as_dict, save_config
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.core.ledger import record_test_look
from pipeline.core.progress import import_tensorflow, progress
from pipeline.core.stage import StageResult
from pipeline.data.splits import SPLITS, Prepared, chosen_comments, cv_groups, prepare
from pipeline.dsp.blocks import IMAGE_BLOCKS, describe, featurize
from pipeline.ml import baselines as B
from pipeline.ml import model as M
from pipeline.ml.metrics import (
    METRICS,
    delta_text,
    paired_delta,
    per_group_scores,
    refit_disagreement,
    score_with_intervals,
)
from pipeline.train.choice import within_targets
from pipeline.train.dsp_choice import block_candidates, choose_block
from pipeline.train.engine import Engine, choose_engine, expected_seconds
from pipeline.train.search import (
    SearchInterrupted,
    after_refit,
    device_budget,
    epoch_cap,
    finals,
    group_folds,
    random_search,
    refit_repeats_search,
    run_trial,
    seed_spread,
    settle,
)
from pipeline.train.summary import HEADLINE, summary_lines

REPORT = "train_report.json"
AUDIT = "audit.json"  # the audit stage's report (pipeline.audit.stage writes it)
MODEL = "float.keras"
PURPOSE = "float model final evaluation"


class Clock:
    """Seconds per phase, for the report's ``timing``."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> float:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self.last, 2)
        self.last = now
        return self.seconds[phase]

    def total(self) -> dict:
        return {**self.seconds, "total": round(time.perf_counter() - self.start, 2)}


def run(cfg, run_dir, *, out=print, allow_leakage: bool = False, prepared: Prepared | None = None,
        audit_report: dict | None = None) -> StageResult:
    """The train stage (``pipeline.core.stage``) into ``run_dir``, on an audited split.

    ``prepared`` and ``audit_report`` are what the audit stage just handed back (the CLI runs
    it first and passes ``result.reuse["prepared"]`` and ``result.report``). Without them the
    split is read with ``pipeline.data.splits.prepare`` (``splits.json`` reused) and the
    audit from ``audit.json``, which must be of that split.
    """
    run_dir = Path(run_dir)
    remove_downstream(run_dir, "train")
    clock = Clock()
    if prepared is None:
        prepared = prepare(cfg, run_dir)
    if audit_report is None:
        audit_report = read_audit(run_dir, prepared, allow_leakage)
    clock.lap("audit")
    raw_shape = tuple(prepared.windows["train"].X.shape[1:])
    report = {
        "status": "running",
        "dataset": prepared.dataset.summary(),
        "split": _split_summary(prepared),
        "audit": _audit_summary(audit_report, allow_leakage),
        "labels": list(prepared.dataset.label_names),
    }
    try:
        choice = first = None
        # The front end is the search's first choice (train/dsp_choice.py): one fit per candidate.
        cands = block_candidates(prepared, cfg) if cfg.dsp.block == "auto" else None
        # The engine is chosen from what the work is expected to cost, and says why. Ray (when
        # chosen) starts first: an unreachable cluster is an error in seconds, and one session
        # (its workers importing TensorFlow once) serves the front ends' fits, the search and
        # the round after the refit.
        engine = choose_engine(cfg.train, expected_work(prepared, cfg.train, len(cands or ()) - 1))
        out(f"train: trials run on {engine.name}: {engine.why}")
        with engine:
            if cands is not None:
                _quiet_tensorflow()
                choice, first = choose_block(prepared, cfg, cands, engine, out)
                clock.lap("dsp_choice")
                out(f"train: DSP block {choice['chosen']}: {choice['why']}")
            prepared = featurize(prepared, cfg)  # [dsp]: the model reads the block's features of the raw windows
            report["config"] = as_dict(cfg)
            report["dsp"] = {**describe(cfg.dsp, prepared.dataset.rate_hz, raw_shape), "auto": choice}
            _train(Job(cfg, run_dir, prepared, report, clock, out, engine, first))
    except GateFailed as exc:
        # The report of a failed run is whole: what was checked, what failed. No model is
        # left behind, so nothing downstream (make quantize) can pick up a stale one.
        (run_dir / MODEL).unlink(missing_ok=True)
        report.update(status="failed", failure=exc.message, timing=clock.total())
        write_json(run_dir / REPORT, report)
        save_config(cfg, run_dir, chosen_comments(prepared))
        out(f"train: a check failed; {run_dir / REPORT} says which and why (no {MODEL} written)")
        raise
    except KeyboardInterrupt:
        # Ctrl-C: the trials that finished are kept in the report; no model is written.
        (run_dir / MODEL).unlink(missing_ok=True)
        report.update(status="interrupted", timing=clock.total())
        write_json(run_dir / REPORT, report)
        save_config(cfg, run_dir)
        done = report.get("search", {}).get("counts", {})
        out(f"train: interrupted; {run_dir / REPORT} keeps the {sum(done.values()) - done.get('stopped', 0)} "
            f"finished search trial(s) (no {MODEL} written)")
        raise
    report["status"] = "passed"
    report["timing"] = clock.total()
    write_json(run_dir / REPORT, report)
    save_config(cfg, run_dir, chosen_comments(prepared))
    for line in summary_lines(report):
        out(line)
    out(f"train: wrote {run_dir / MODEL} and {run_dir / REPORT} in {report['timing']['total']:.0f} s")
    return StageResult("train", run_dir / REPORT, report, paths=(run_dir / MODEL, run_dir / "config.toml"),
                       reuse={"prepared": prepared})


def expected_work(prepared: Prepared, tc, more_fits: int = 0) -> float:
    """Seconds on one core that the engine's tasks are expected to take (the epoch caps:
    early stopping only shortens them): the search's trials, the seed refits, the
    leave-one-group-out folds (``pipeline.train.engine.expected_seconds``),
    and ``more_fits`` more of a trial's (the front ends of ``[dsp] block = "auto"`` beyond the
    one the search reuses as its trial 0). On raw windows before the DSP choice, the input
    size is the raw window's: an upper bound, features being no larger for the blocks here."""
    w = prepared.windows
    n_train, side = len(w["train"]), len(w["train"]) + len(w["val"])
    refit = epoch_cap(tc, tc.epochs)
    tasks = [(tc.search_epochs, n_train)] * (tc.trials + max(0, more_fits)) + [(refit, n_train)] * (tc.seeds - 1)
    if prepared.dataset.has_groups and tc.logo_folds:
        groups = np.unique(np.concatenate([w["train"].group_ids, w["val"].group_ids]).astype(str)).size
        if groups >= 3:
            tasks += [(refit, side)] * min(groups, tc.logo_folds)
    return expected_seconds(tasks, int(np.prod(w["train"].X.shape[1:])))


def read_audit(run_dir: Path, prepared: Prepared, allow_leakage: bool) -> dict:
    """``audit.json`` of this run, for a train stage called without the audit's report: it
    must be of this split, and its failed error checks stop the stage as the audit would
    (unless ``allow_leakage``)."""
    path = run_dir / AUDIT
    doc = read_json(path, "the audit report") if path.exists() else None
    if not doc or (doc.get("split") or {}).get("test_sha256") != prepared.manifest["test_sha256"]:
        raise PipelineError(f"{path}: {'not of this split' if doc else 'not found'}",
                            hint="run `tinyml audit` (make audit) first, or `tinyml train`, which audits")
    failed = doc.get("errors_failed") or []
    if failed and not allow_leakage:
        raise GateFailed(f"audit: {len(failed)} error-level check(s) failed: {', '.join(failed)} (details in {path})",
                         hint=f"or pass --allow-leakage to go on anyway (recorded in {AUDIT})")
    return doc


@dataclass
class Job:
    """One train stage at work: where it writes, what it reads, and what it has found."""

    cfg: object
    run_dir: Path
    prepared: Prepared
    report: dict
    clock: Clock
    out: object  # Callable[[str], None]
    engine: Engine
    first: dict | None = None  # the DSP choice's fit of the chosen block: the search's trial 0

    @property
    def windows(self) -> dict:
        return self.prepared.windows

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.prepared.dataset.label_names)

    @property
    def k(self) -> int:
        return len(self.names)


def _train(job: Job) -> None:
    """Karpathy's recipe, step by step; each step's findings go into ``job.report``."""
    cfg, tc, w = job.cfg, job.cfg.train, job.windows
    _quiet_tensorflow()
    input_shape = tuple(w["train"].X.shape[1:])
    groups = {s: cv_groups(w[s], job.prepared.plan) for s in SPLITS}
    priors = M.class_priors(w["train"].y, job.k)
    base = M.ModelParams.from_config(tc, time_frequency=cfg.dsp.block in IMAGE_BLOCKS)
    check_input_budget(input_shape, cfg, job.prepared.dataset.rate_hz)

    sanity = _sanity_at_init(job, input_shape, base, priors)  # 1. cheap, so first
    job.clock.lap("sanity")
    # 2. Baselines, on the same splits.
    job.out("train: baselines (dummy prior / most frequent, convnet on zero inputs, linear with group-aware CV)")
    baselines = B.dummy_baselines(w, job.k, cfg.seed)
    baselines.append(B.zero_input_baseline(w, job.k, base, priors, tc.batch_size, cfg.seed))
    baselines.append(B.linear_baseline(w, groups["train"], job.k, cfg.split.folds, cfg.seed))
    job.clock.lap("baselines")
    search = _search(job, priors, base)  # 3.
    logo_done = _finals(job, search, priors)
    if logo_done is None and search["best"].get("source") == "config":
        logo_done = search.get("config_logo")  # fitted in the search's round
    job.clock.lap("search")
    best = M.ModelParams(**search["best"]["params"])
    net, proba, final = _refit(job, best, priors)  # 4.
    # 5. On the search's engine, one round: more seeds (the spread of the score), the
    # new-subject estimate (leave-one-group-out: the chosen configuration without each
    # training-side group, for the refit's best epoch count).
    # The search fitted the configured model from the next seeds too: when it is chosen and
    # the refits would run the same epochs, those fits are its seed refits.
    config_seeds = search.pop("config_seed_records", [])
    reuse = (search["best"].get("source") == "config" and len(config_seeds) == tc.seeds - 1
             and refit_repeats_search(tc))
    more = after_refit(search["best"], w["train"], w["val"], job.k, priors, tc, cfg.seed, device_budget(cfg.quantize),
                       (tc.logo_folds if job.prepared.dataset.has_groups else 0, final["best_epoch"]),
                       job.engine, job.out, done_seeds=config_seeds if reuse else None,
                       done_logo=logo_done if logo_done and logo_done["epochs"] == final["best_epoch"] else None)
    _check_reproducible(sanity, search["best"], final, tc, cfg.seed)
    job.report["refit_seeds"] = seed_spread(final, cfg.seed, more["seeds"], search["best"]["val_score"], tc)
    job.report["refit_seeds"]["val_disagreement"] = refit_disagreement(proba["val"].argmax(1), more["seeds"])
    job.report["leave_one_group_out"] = more["logo"]
    job.clock.lap("seeds_and_leave_one_group_out")
    _validate(job, proba, baselines, groups)  # 6.
    _test_look(job, net, best, proba, baselines, groups, input_shape)  # 7.
    job.clock.lap("evaluate")


def _finals(job: Job, search: dict, priors) -> dict | None:
    """A random draw that beat the configured model beyond reseeding noise on validation
    faces it once more, each left out group by group (``finals``): the higher mean wins, the
    configured model on a tie. Returns the winner's leave-one-group-out summary (the round
    after the refit need not fit it again), or None when there was nothing to settle."""
    tc, w = job.cfg.train, job.windows
    rival = search.get("rival")
    if rival is None or not job.prepared.dataset.has_groups or not tc.logo_folds:
        return None
    config = next(t for t in search["trials"] if t["trial"] == rival)
    draw = search["best"]
    done = {config["trial"]: search["config_logo"]} if "config_logo" in search else None
    summaries = finals([config, draw], w["train"], w["val"], job.k, priors, tc, job.cfg.seed,
                       device_budget(job.cfg.quantize), tc.logo_folds, job.engine, job.out, done=done)
    if summaries is None:
        return None
    search["best"], search["chosen_by"], logo = settle(config, draw, *summaries, search["chosen_by"])
    search["finals"] = {"trials": [config["trial"], draw["trial"]],
                        "leave_one_group_out_means": [round(x["mean"], 4) for x in summaries]}
    return logo


def _sanity_at_init(job: Job, input_shape: tuple, base, priors) -> dict:
    """The loss at init against the entropy of the class prior, then one batch overfitted."""
    tc, seed, train_w = job.cfg.train, job.cfg.seed, job.windows["train"]
    job.out(f"train: {len(train_w)} training windows {input_shape}, {job.k} classes; sanity checks at init")
    sanity = job.report["sanity"] = {"seed": seed, "seeded": ["python", "numpy", "tensorflow", "op determinism"]}
    M.seed_everything(seed)
    net = M.build_model(input_shape, job.k, base, train_w.X, priors)
    M.check_init_loss(net, train_w.X, train_w.y, priors, tc.init_loss_tolerance, record=sanity)
    del net
    batch = M.pick_batch(train_w.y, tc.search_space.overfit_batch, seed)
    M.overfit_one_batch(input_shape, job.k, base, train_w.X[batch], train_w.y[batch], tc.search_space.overfit_steps,
                        tc.search_space.overfit_max_loss, seed, tc.search_space.overfit_learning_rate, record=sanity)
    return sanity


def _search(job: Job, priors, base) -> dict:
    """Random search, scored on validation, each trial with its cost on the board."""
    cfg, tc = job.cfg, job.cfg.train
    where = job.engine.describe()
    logo = _config_folds(job)
    job.out(f"train: random search, {tc.trials} trials of up to {tc.search_epochs} epochs, costed on "
            f"{cfg.quantize.board} ({where['engine']}, {where['address']}, {where['cpus'] or 1} CPUs)"
            + (f"; beside them, the configured model left out group by group ({len(logo.folds)} fits)" if logo else ""))
    try:
        search = job.report["search"] = random_search(job.windows["train"], job.windows["val"], job.k, priors, tc,
                                                      base, cfg.seed, device_budget(cfg.quantize), job.engine,
                                                      out=job.out, first=job.first, logo=logo)
    except SearchInterrupted as exc:
        exc.search.pop("config_seed_records", None)
        job.report["search"] = exc.search
        raise
    return search


def _config_folds(job: Job):
    """The training side's folds for the configured model's leave-one-group-out fits in the
    search's round (``random_search``'s ``logo``), when they are sure to be used: the chosen
    model's folds after the refit run the refit's epochs, the search's only under cosine (the
    refit repeats its trial) with the same epoch cap; and not when the configured model is
    known (from the DSP choice's fit) to miss the RAM or latency target, so cannot be chosen."""
    tc = job.cfg.train
    if not (job.prepared.dataset.has_groups and tc.logo_folds and tc.lr_schedule == "cosine"
            and refit_repeats_search(tc)):
        return None
    if job.first is not None and not within_targets([job.first], tc.max_ram_kb, tc.max_latency_ms)[0]:
        return None
    folds = group_folds(job.windows["train"], job.windows["val"], tc.logo_folds)
    return folds if not isinstance(folds, dict) else None


def _check_reproducible(sanity: dict, first_run: dict, refit: dict, tc, seed: int) -> None:
    """Two trainings of the chosen configuration from one seed must agree to the bit: the
    best search trial and the refit, over the epochs both ran (the same seed, data and
    learning rates give the same epochs; under a constant rate the refit may run longer,
    under cosine it repeats the trial: ``search.run_trial``). The trial ran on the search's
    engine (a Ray worker, possibly), the refit in this process."""
    history = refit.pop("history", None)  # the report keeps it once, as report["history"]
    if not tc.reproducibility_check:
        sanity["reproducible"] = None
        sanity["reproducibility"] = {"skipped": "[train] reproducibility_check = false"}
        return
    n = min(first_run["epochs"], refit["epochs"])
    # A search trial under cosine scores validation once, at the end (``run_trial``'s
    # ``curves``): the per-epoch figures both have are the training loss and accuracy.
    keys = sorted(set(first_run["history"]) & set(history))
    first, second = ({k: h[k][:n] for k in keys} for h in (first_run["history"], history))
    # Early stopping before the smaller epoch cap must end both at the same epoch.
    cap = min(tc.search_epochs, tc.epochs)
    same_end = first_run["epochs"] == refit["epochs"]  # the same weights at the end: the same scores
    for figures, run in ((first, first_run), (second, refit)):
        figures["stopped_early_at"] = run["epochs"] if run["epochs"] < cap else None
        if same_end:
            figures.update({k: run[k] for k in ("val_loss", "val_score", "train_loss")})
    compared = (f"best search trial (search engine) and the refit (this process), one seed: "
                f"{', '.join(keys)} of each of the {n} epochs both ran"
                + ("; validation and training loss and score at the end" if same_end else ""))
    sanity["reproducible"] = first == second
    sanity["reproducibility"] = {"compared": compared, "first": first, "second": second}
    if not sanity["reproducible"]:
        raise GateFailed(
            f"two trainings with seed {seed} differ ({compared}): training is not reproducible",
            hint="something unseeded or nondeterministic runs in training; see sanity.reproducibility "
                 "in train_report.json",
        )


def _refit(job: Job, best, priors) -> tuple[object, dict, dict]:
    """The best configuration refit with the full epoch budget: the net, its train/val
    probabilities, and its trial record."""
    tc, w, report = job.cfg.train, job.windows, job.report
    epochs = epoch_cap(tc, tc.epochs)
    job.out(f"train: refit of the best configuration (trial {report['search']['best']['trial']}), "
            f"up to {epochs} epochs")
    bar = iter(progress(range(epochs), "refit", total=epochs, unit="epoch"))
    final, (net, fitted) = run_trial(best, w["train"], w["val"], job.k, priors, tc, epochs, job.cfg.seed,
                                     on_epoch=lambda _: next(bar, None))
    # Per-epoch lists (the report draws curves from them), the epochs run and the epoch
    # whose weights were kept.
    report["history"] = {**fitted["history"], "epochs_run": fitted["epochs_run"],
                         "best_epoch": fitted["best_epoch"]}
    report["refit"] = final
    job.clock.lap("refit")
    return net, dict(fitted["proba"]), final


def _validate(job: Job, proba: dict, baselines: list, groups: dict) -> None:
    """The convnet against every baseline on train and validation, before anyone looks at test."""
    w, seed, word = job.windows, job.cfg.seed, job.prepared.group_word
    metrics = job.report["metrics"] = {}
    base_report = job.report["baselines"] = {}
    for s in ("train", "val"):
        metrics[s] = _score(w[s].y, proba[s], job.names, groups[s], seed, word)
    for b in baselines:
        base_report[b.name] = {"description": b.description, "input_independent": b.input_independent,
                               **b.extra}
        for s in ("train", "val"):
            base_report[b.name][s] = _score(w[s].y, b.proba[s], job.names, groups[s], seed, word)
    _check_beats_baselines(job.report["sanity"], baselines, w["val"].y, proba["val"].argmax(1), job.k,
                           groups["val"], seed)


def _test_look(job: Job, net, best, proba: dict, baselines: list, groups: dict, input_shape: tuple) -> None:
    """The model written, then the one look at the test split (convnet and baselines together)."""
    w, seed, word, report = job.windows, job.cfg.seed, job.prepared.group_word, job.report
    metrics, base_report = report["metrics"], report["baselines"]
    path = job.run_dir / MODEL
    save_model(net, path)
    sha = sha256_file(path)
    proba["test"] = M.predict_proba(net, w["test"].X)
    metrics["test"] = _score(w["test"].y, proba["test"], job.names, groups["test"], seed, word)
    look = {key: metrics["test"][key] for key in ("n", *METRICS)}
    for b in baselines:
        base_report[b.name]["test"] = _score(w["test"].y, b.proba["test"], job.names, groups["test"], seed, word)
        for key in HEADLINE:
            look[f"baseline.{b.name}.{key}"] = base_report[b.name]["test"][key]
    entry = record_test_look(job.run_dir, "train", PURPOSE, sha, look, job.prepared.manifest["test_sha256"])
    report["test_look"] = {"purpose": PURPOSE, "look": entry["look"], "warning": entry.get("warning")}
    if job.prepared.dataset.has_groups:
        report["by_group"] = {s: per_group_scores(w[s].y, (proba[s]).argmax(1), job.k, w[s].group_ids)
                              for s in SPLITS}
    report["model"] = {
        "file": MODEL, "sha256": sha, "params": int(net.count_params()),
        "input_shape": list(input_shape), "labels": list(job.names), "hyperparameters": best.as_dict(),
        "normalization": M.normalization_stats(net), "layers": M.describe(net),
    }


def check_input_budget(input_shape: tuple, cfg, rate_hz) -> None:
    """Stop before training when one window cannot fit the board: the TFLM arena holds at
    least the int8 input and its normalized copy (2 bytes per input value), before any layer.
    The first convolution downsamples long inputs (``model.front_end_stride``), so what is
    left to set is the window or the rate."""
    q = cfg.quantize
    board = get_board(q.board)
    budget = q.ram_budget_bytes or int(board.ram_bytes * (1 - q.ram_reserve))
    values = int(np.prod(input_shape))
    if 2 * values > budget:
        steps = input_shape[0]
        fit = budget // (2 * int(np.prod(input_shape[1:])))
        what = (f"[split] window_ms at most {fit / rate_hz * 1000:.0f} (now {steps / rate_hz * 1000:.0f} ms) or "
                f"[data] rate_hz lower (now {rate_hz:g} Hz)") if rate_hz else "smaller inputs"
        raise PipelineError(
            f"input {tuple(input_shape)} is {values:,} values: as int8 with its normalized copy it needs "
            f"{2 * values:,} B of RAM, more than the {board.name} budget of {budget:,} B; set {what}",
            hint="or [quantize] board / ram_budget_bytes for a board with more RAM")


def _score(y, proba, names, groups, seed, group_word: str = "group") -> dict:
    """``score_with_intervals`` of the predictions, with the log loss of the probabilities."""
    result = score_with_intervals(y, proba.argmax(1), names, groups=groups, seed=seed, group_word=group_word)
    result["log_loss"] = M.cross_entropy(proba, y)
    return result


def _check_beats_baselines(sanity, baselines, y_val, pred_val, k, groups, seed) -> None:
    """Beating a baseline means a paired group-bootstrap interval of the gain in validation
    balanced accuracy above zero, not a point estimate a lucky split could give.

    Not beating an input-independent baseline means the model learned nothing from its
    input (labels shuffled against inputs, a broken pipeline): the stage fails. Not beating
    the linear model is a finding, said loudly, not a failure.
    """
    deltas, beats = {}, {}
    for b in baselines:
        d = paired_delta(y_val, b.predictions("val"), pred_val, k, "balanced_accuracy",
                         groups=groups, seed=seed)
        deltas[b.name] = d
        beats[b.name] = bool((d["ci95"] or d["ci95_bootstrap"])[0] > 0)
    sanity["beats_baselines"] = beats
    sanity["baseline_deltas"] = deltas
    sanity["beats_every_baseline"] = all(beats.values())
    lost = [b.name for b in baselines if b.input_independent and not beats[b.name]]
    if lost:
        d = deltas[lost[0]]
        raise GateFailed(
            f"the convnet does not beat the input-independent baseline(s) {', '.join(lost)} on "
            f"validation (balanced accuracy gain {delta_text(d)}): it learned nothing from its input; "
            "check that labels line up with inputs",
            hint="see sanity.baseline_deltas in train_report.json",
        )


def save_model(model, path: Path) -> None:
    """Keras insists on a ``.keras`` suffix, so the temporary file gets one too."""
    with atomic_path(path) as tmp:
        keras_tmp = tmp.with_name(tmp.name + ".keras")
        try:
            model.save(keras_tmp)
            os.replace(keras_tmp, tmp)
        finally:
            keras_tmp.unlink(missing_ok=True)


def _split_summary(prepared) -> dict:
    plan, w = prepared.plan, prepared.windows
    names = prepared.dataset.label_names
    return {
        "strategy": plan.strategy, "group_by": plan.group_by, "seed": plan.seed,
        "windows": {s: len(w[s]) for s in SPLITS},
        "class_counts": {s: dict(zip(names, np.bincount(w[s].y, minlength=len(names)).tolist(), strict=True))
                         for s in SPLITS},
        "groups": {s: int(np.unique(cv_groups(w[s], plan)).size) for s in SPLITS},
        "window_length": plan.window_length, "window_stride": plan.window_stride,
        "window_ms": plan.window_ms, "stride_ms": plan.stride_ms,
        "test_sha256": prepared.manifest["test_sha256"], "notes": list(plan.notes),
        "repairs": list(prepared.manifest.get("repairs") or []),
    }


def _audit_summary(audit_report: dict, allow_leakage: bool) -> dict:
    return {
        "errors_failed": audit_report["errors_failed"],
        "warnings_failed": audit_report["warnings_failed"],
        "allow_leakage": bool(allow_leakage),
    }


def _quiet_tensorflow() -> None:
    tf = import_tensorflow()
    # Retracing notices for each new small model are expected here and say nothing useful.
    tf.get_logger().setLevel("ERROR")
