"""The report's figures: each function takes plain numbers and returns PNG bytes.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, so no global
backend is switched and nothing is shown), about 7 inches wide at 100 dpi: the width of the
report's column on a laptop. matplotlib is imported inside the functions; the CLI stays light.
"""

from __future__ import annotations

import io

import numpy as np

WIDTH = 7.0  # inches; the report's column is about 700 px
DPI = 100
SPLIT_COLORS = {"train": "#0072B2", "val": "#E69F00", "test": "#009E73"}  # Okabe-Ito
LINE_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _figure(height: float, width: float = WIDTH):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.set_layout_engine("constrained")
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _short(text: str, n: int = 18) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def class_counts(counts: dict[str, dict[str, int]], labels: list[str]) -> bytes:
    """Windows per class, a bar per split."""
    splits = [s for s in ("train", "val", "test") if s in counts]
    fig = _figure(2.8)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(splits))
    for i, s in enumerate(splits):
        values = [counts[s].get(name, 0) for name in labels]
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, values, width, label=s, color=SPLIT_COLORS[s])
    ax.set_xticks(x, [_short(n, 12) for n in labels], rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylabel("windows")
    ax.set_title("Windows per class and split", loc="left")
    ax.legend(frameon=False, ncols=len(splits), loc="lower right", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def group_splits(groups: list[str], splits: list[str], counts: list[int] | None, group_by: str) -> bytes:
    """Which group (or recording) went to which split: a bar per group, coloured by split;
    ``group_by`` names what a bar is ("group", "recording")."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    n = len(groups)
    fig = _figure(2.6)
    ax = fig.add_subplot()
    heights = counts if counts is not None else [1] * n
    colors = [SPLIT_COLORS.get(s, "#999999") for s in splits]
    ax.bar(np.arange(n), heights, 0.85, color=colors)
    if n <= 40:
        ax.set_xticks(np.arange(n), [_short(x, 14) for x in groups], rotation=60 if n > 8 else 0,
                      ha="right" if n > 8 else "center", fontsize=8 if n > 16 else 9)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{n} {group_by}s")
    ax.set_ylabel("recordings" if counts is not None else "")
    if counts is None:
        ax.set_yticks([])
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Each {group_by} lands in one split", loc="left")
    present = [s for s in ("train", "val", "test") if s in splits]
    ax.legend(handles=[Patch(color=SPLIT_COLORS[s], label=s) for s in present], frameon=False,
              ncols=len(present), loc="lower right", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def recording_lengths(lengths: dict[str, np.ndarray], unit: str) -> bytes:
    """Histogram of recording lengths, stacked by split."""
    splits = [s for s in ("train", "val", "test") if s in lengths and len(lengths[s])]
    fig = _figure(2.5)
    ax = fig.add_subplot()
    values = [np.asarray(lengths[s], dtype=float) for s in splits]
    ax.hist(values, bins=min(30, max(5, int(np.sqrt(sum(len(v) for v in values))))), stacked=True,
            color=[SPLIT_COLORS[s] for s in splits], label=splits)
    ax.set_xlabel(f"recording length ({unit})")
    ax.set_ylabel("recordings")
    ax.set_title("Recording lengths")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def windows_grid(panels: list[tuple[str, np.ndarray]], channel_names: list[str], rate_hz: float | None,
                 title: str) -> bytes:
    """Small multiples of windows: channels as lines for time series, the picture for images."""
    n = len(panels)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    image = panels[0][1].ndim == 3
    fig = _figure((1.9 if image else 1.7) * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, (name, x) in zip(axes.ravel(), panels, strict=False):
        ax.set_title(name, fontsize=7.5)
        if image:
            img = x[..., 0] if x.shape[-1] == 1 else x[..., :3]
            if img.ndim == 3:
                lo, hi = float(img.min()), float(img.max())
                img = (img - lo) / (hi - lo) if hi > lo else img * 0
            ax.imshow(img, cmap="gray_r" if img.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        t = np.arange(x.shape[0]) / rate_hz if rate_hz else np.arange(x.shape[0])
        for c in range(x.shape[1]):
            label = channel_names[c] if c < len(channel_names) else f"ch{c}"
            ax.plot(t, x[:, c], lw=0.9, color=LINE_COLORS[c % len(LINE_COLORS)], label=label)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    if not image:
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        if len(handles) <= 8:
            fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
        title += f"  (x: {'seconds' if rate_hz else 'steps'})"
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def metric_by_split(rows: list[tuple[str, dict[str, tuple[float, float, float] | None]]], metric: str) -> bytes:
    """Each model's metric on train, validation and test, with its 95% interval."""
    splits = ("train", "val", "test")
    fig = _figure(0.42 * len(rows) + 1.0)
    ax = fig.add_subplot()
    offsets = {"train": -0.22, "val": 0.0, "test": 0.22}
    for i, (_, by_split) in enumerate(rows):
        for s in splits:
            v = by_split.get(s)
            if v is None:
                continue
            value, lo, hi = v
            ax.errorbar(value, i + offsets[s], xerr=[[value - lo], [hi - value]], fmt="o", ms=4,
                        color=SPLIT_COLORS[s], capsize=2, lw=1, label=s if i == 0 else None)
    ax.set_yticks(np.arange(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.replace('_', ' ')} (95% interval)")
    ax.legend(frameon=False, ncols=3, loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def training_curves(history: dict[str, list[float]], best_epoch: int | None,
                    init_loss: float | None, expected_init_loss: float | None) -> bytes:
    """Loss and accuracy per epoch, train and validation; the loss at init against its expected value."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(3.0)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for name, split in ((key, "train"), (f"val_{key}", "val")):
            values = history.get(name)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, "-o", ms=2.5, lw=1.2,
                        color=SPLIT_COLORS[split], label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="#777777", ls=":", lw=1, label=f"kept (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    if init_loss is not None:
        ax_loss.plot([0], [init_loss], "s", color="#000000", ms=4, label="at init")
    if expected_init_loss is not None:
        ax_loss.axhline(expected_init_loss, color="#000000", ls="--", lw=0.8, label="expected at init")
    # One legend under both panels: inside either it would cover a curve.
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    return _png(fig)


def search_trials(trials: list[tuple[float, float, bool]], score: str) -> bytes:
    """Validation score against training score per trial, with the diagonal."""
    fig = _figure(3.2, width=4.2)
    ax = fig.add_subplot()
    tr = np.array([t[0] for t in trials])
    va = np.array([t[1] for t in trials])
    best = np.array([t[2] for t in trials])
    lo = float(min(tr.min(), va.min(), 1.0)) - 0.05
    hi = float(max(tr.max(), va.max(), 0.0)) + 0.05
    ax.plot([lo, hi], [lo, hi], color="#999999", lw=0.8, ls="--", label="val = train")
    ax.scatter(tr[~best], va[~best], s=22, color="#0072B2", label="trial")
    ax.scatter(tr[best], va[best], s=60, marker="*", color="#D55E00", label="best (kept)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"training {score}")
    ax.set_ylabel(f"validation {score}")
    ax.set_title("Random-search trials", fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def confusions(mats: list[tuple[str, list[list[int]]]], labels: list[str]) -> bytes:
    """Confusion matrices side by side: counts, coloured by the share of each true class."""
    n = len(mats)
    k = len(labels)
    side = min(WIDTH / n, 3.6)
    fig = _figure(side + 0.45, width=min(WIDTH, side * n + 0.2))
    axes = fig.subplots(1, n, squeeze=False)[0]
    short = [_short(name, 8) for name in labels]
    for ax, (title, m) in zip(axes, mats, strict=True):
        m = np.asarray(m, dtype=float)
        rows = m.sum(axis=1, keepdims=True)
        share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8 if k <= 6 else 6,
                            color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(np.arange(k), short, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(np.arange(k), short, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("true", fontsize=8)
    return _png(fig)


def memory_bars(rows: list[tuple[str, int, int, int | None]], board: str) -> bytes:
    """Flash and RAM: what the model uses against its budget (and the whole board), a bar per budget."""
    fig = _figure(0.8 * len(rows) + 1.0)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (name, used_b, budget_b, total_b) in zip(axes, rows, strict=True):
        used, budget, total = used_b / 1024, budget_b / 1024, (total_b or 0) / 1024
        limit = max(total, budget, used)
        ax.barh([0], [budget], color="#DDDDDD", height=0.6, label="budget")
        ok = used <= budget
        ax.barh([0], [used], color="#009E73" if ok else "#D55E00", height=0.6, label="used")
        if total:
            ax.axvline(total, color="#555555", ls="--", lw=0.8, label="board total")
        ax.set_xlim(0, limit * 1.02)
        ax.set_yticks([0], [name])
        share = used / budget if budget else float("inf")
        ax.text(min(used, limit) + limit * 0.01, 0, f"{used:,.1f} KiB = {share:.1%} of "
                f"{budget:,.0f} KiB budget", va="center", fontsize=8)

        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False, fontsize=7, ncols=3, loc="lower right", bbox_to_anchor=(1, 1))
    axes[0].set_title(f"Memory against the {board} budget (KiB)", fontsize=10, loc="left")
    return _png(fig)


def per_layer(layers: list[str], cosines: list[float | None], lsb: list[int | None], jump: str | None) -> bytes:
    """Float vs int8 cosine per layer (left axis) and LiteRT vs TFLM max LSB (right), in graph order."""
    fig = _figure(3.0)
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    cos = np.array([np.nan if c is None else c for c in cosines], dtype=float)
    ax.plot(x, cos, marker="o", color=LINE_COLORS[0], label="float vs int8 cosine")
    if jump in layers:
        i = layers.index(jump)
        ax.plot([i], [cos[i]], marker="o", markersize=12, fillstyle="none", color=LINE_COLORS[1],
                label=f"error jumps: {_short(jump)}")
    ax.set_xticks(x, [_short(n, 12) for n in layers], rotation=30, ha="right")
    ax.set_ylabel("cosine similarity")
    ax.set_ylim(min(0.9, np.nanmin(cos) - 0.01) if np.isfinite(cos).any() else 0.9, 1.002)
    ax2 = ax.twinx()
    ax2.bar(x, [0 if v is None else v for v in lsb], alpha=0.3, color=LINE_COLORS[2], label="LiteRT vs TFLM max LSB")
    ax2.set_ylabel("LiteRT vs TFLM, max LSB")
    lines = ax.get_legend_handles_labels()
    bars = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + bars[0], lines[1] + bars[1], loc="lower left", fontsize=8)
    return _png(fig)


def search_pareto(points: list[tuple[float, float, float, bool, bool, bool]], score: str) -> bytes:
    """Validation score against RAM (KB) and against predicted latency (ms), one point per
    finished trial: (score, ram_kb, latency_ms, on the RAM front, on the latency front, chosen).
    Each front is drawn as a step line (the best score reachable at that cost)."""
    fig = _figure(3.0)
    axes = fig.subplots(1, 2, sharey=True)
    score_v = np.array([p[0] for p in points])
    chosen = np.array([p[5] for p in points])
    for ax, col, front_col, label in ((axes[0], 1, 3, "RAM, TFLM arena (KB)"),
                                      (axes[1], 2, 4, "predicted latency (ms)")):
        cost = np.array([p[col] for p in points])
        front = np.array([p[front_col] for p in points])
        ax.scatter(cost[~front], score_v[~front], s=20, color="#999999", label="trial")
        order = np.argsort(cost[front])
        ax.step(cost[front][order], score_v[front][order], where="post", color="#0072B2", lw=1.2)
        ax.scatter(cost[front], score_v[front], s=26, color="#0072B2", label="Pareto front")
        ax.scatter(cost[chosen], score_v[chosen], s=90, marker="*", color="#D55E00", label="chosen", zorder=3)
        ax.set_xlabel(label)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel(f"validation {score}")
    axes[0].legend(frameon=False, fontsize=7, loc="lower right")
    fig.suptitle("Search: accuracy against device cost", fontsize=10)
    return _png(fig)


def feature_images(panels: list[tuple[str, np.ndarray]], title: str, ylabel: str) -> bytes:
    """One (frames, values) feature image per class: time across, filters / coefficients up."""
    n = len(panels)
    cols = min(5, n)
    rows = int(np.ceil(n / cols))
    fig = _figure(1.7 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    lo = min(float(x.min()) for _, x in panels)
    hi = max(float(x.max()) for _, x in panels)
    for ax, (name, x) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(x.T, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name, fontsize=7.5)
        ax.tick_params(labelsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=7)
    for ax in axes[-1, :]:
        ax.set_xlabel("frame", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def feature_distributions(by_split: dict[str, np.ndarray], xlabel: str, title: str) -> bytes:
    """Per feature (x), each split's median and interquartile band over its windows."""
    fig = _figure(2.8)
    ax = fig.subplots()
    for split, F in by_split.items():
        q1, med, q3 = np.percentile(F, [25, 50, 75], axis=0)
        x = np.arange(F.shape[1])
        color = SPLIT_COLORS.get(split, "#000000")
        ax.plot(x, med, color=color, lw=1.2, label=f"{split} median ({len(F)} windows)")
        ax.fill_between(x, q1, q3, color=color, alpha=0.18, lw=0)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("feature value (band: 25-75%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)
