"""The search's choice: the Pareto fronts of validation score against the board's cost, and
the chosen trial, within the RAM and latency targets and beyond reseeding noise."""

from __future__ import annotations

import math

import numpy as np

from pipeline.core.errors import GateFailed

STATUSES = ("ok", "over_budget", "failed", "stopped")  # of a search trial (search.evaluate_trial)


def pareto_front(trials: list[dict], cost: str) -> list[dict]:
    """The finished trials no other beats on both validation score (higher) and ``cost``
    (lower), by increasing cost."""
    done = [t for t in trials if t.get("status") == "ok"]
    front = [t for t in done
             if not any(o["val_score"] >= t["val_score"] and o["device"][cost] <= t["device"][cost]
                        and (o["val_score"] > t["val_score"] or o["device"][cost] < t["device"][cost])
                        for o in done)]
    front.sort(key=lambda t: (t["device"][cost], -t["val_score"]))
    return [{"trial": t["trial"], "val_score": t["val_score"], cost: t["device"][cost]} for t in front]


# A random draw replaces the configured model only when its validation score beats the
# configured model's mean over seeds by more than reseeding alone moves a score: 2 standard
# deviations of the difference between one fit and a mean of n (sd x sqrt(1 + 1/n), the sd
# that of the configured model's seeds), about a 95% one-sided test. The best of 9 random
# scores is biased upward (the winner's curse), and on motion the best draws' validation
# score (0.977) lay within the configured model's own reseeding spread (0.974 to 0.977):
# choosing among them chose noise. The margin cannot see the spread between groups, though:
# on fsdd (one validation speaker) trial 4 beat the configured model by 0.035 against a
# margin of 0.019 and was still the worse model on the other speakers; ``finals`` settles
# such a draw where there are groups to leave out.
NOISE_SDS = 2.0


def noise_margin(config: dict, config_seeds: list[dict]) -> dict | None:
    """The configured model's validation scores over seeds and the margin a random draw
    must beat their mean by (``NOISE_SDS``); None with fewer than 2 scores."""
    vals = [config["val_score"]] + [r["val_score"] for r in config_seeds if r.get("status") == "ok"]
    if len(vals) < 2:
        return None
    sd = float(np.std(vals, ddof=1))
    return {"scores": [round(v, 4) for v in vals], "mean": float(np.mean(vals)), "sd": sd,
            "margin": NOISE_SDS * sd * math.sqrt(1 + 1 / len(vals))}


def within_targets(trials: list[dict], max_ram_kb: float, max_latency_ms: float) -> tuple[list[dict], list[str]]:
    """The finished trials within ``[train] max_ram_kb`` / ``max_latency_ms`` (0: no target), and the targets said."""
    done = [t for t in trials if t.get("status") == "ok"]
    targets = []
    if max_ram_kb > 0:
        targets.append(f"RAM <= {max_ram_kb:g} KB")
        done = [t for t in done if t["device"]["ram_bytes"] <= max_ram_kb * 1024]
    if max_latency_ms > 0:
        targets.append(f"predicted latency <= {max_latency_ms:g} ms")
        done = [t for t in done if t["device"]["latency_ms"] <= max_latency_ms]
    return done, targets


def choose(trials: list[dict], max_ram_kb: float, max_latency_ms: float,
           config_seeds: list[dict] = ()) -> tuple[dict, str]:
    """The most accurate finished trial within the targets (0: no target); a lower
    validation loss breaks ties. With ``config_seeds`` (the configured model, trial 0, fitted
    from more seeds), the configured model stays unless the best draw beats its mean by
    more than reseeding noise (``noise_margin``)."""
    done, targets = within_targets(trials, max_ram_kb, max_latency_ms)
    if not done:
        finished = [t for t in trials if t.get("status") == "ok"]
        if not finished:
            counts = {s: sum(t.get("status") == s for t in trials) for s in STATUSES}
            raise GateFailed(f"no search trial finished ({', '.join(f'{n} {s}' for s, n in counts.items() if n)})",
                             hint="see search.trials in train_report.json for each trial's status and error")
        least_ram = min(finished, key=lambda t: t["device"]["ram_bytes"])
        fastest = min(finished, key=lambda t: t["device"]["latency_ms"])
        raise GateFailed(
            f"no search trial meets [train] {' and '.join(targets)}: the smallest needs "
            f"{least_ram['device']['ram_bytes'] / 1024:.1f} KB of RAM, the fastest "
            f"{fastest['device']['latency_ms']:.2f} ms ({fastest['device'].get('latency_label', 'predicted')})",
            hint="raise [train] max_ram_kb / max_latency_ms, or lower [train.search_space] width_max / depth_max")
    best = max(done, key=lambda t: (round(t["val_score"], 6), -t["val_loss"]))
    within = f" within {' and '.join(targets)}" if targets else ""
    config = next((t for t in done if t.get("source") == "config"), None)
    noise = noise_margin(config, list(config_seeds)) if config is not None and best is not config else None
    if noise is not None:
        gain = best["val_score"] - noise["mean"]
        figures = (f"trial {best['trial']} val {best['val_score']:.3f}, the configured model "
                   f"{noise['mean']:.3f} over {len(noise['scores'])} seeds (sd {noise['sd']:.3f}): "
                   f"{gain:+.3f} against a margin of {noise['margin']:.3f}")
        if gain <= noise["margin"]:
            return config, (f"the configured model{within}: no random draw beats it by more than reseeding "
                            f"noise ({figures})")
        return best, f"highest validation score{within}, beyond reseeding noise ({figures})"
    return best, "highest validation score" + within
