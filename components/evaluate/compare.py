"""Champion vs challenger on the same prompts and seeds, as pure functions of their per-prompt scores.

    outcome of a prompt   win when challenger - champion > tie_tolerance, loss when < -tie_tolerance,
                          else tie
    win rate              (wins + ties / 2) / prompts
    confidence interval   percentile bootstrap over prompts (resampled with replacement), seeded
    per category          prompts, both means and their delta
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def outcomes(challenger: Sequence[float], champion: Sequence[float], tie_tolerance: float) -> list[str]:
    if len(challenger) != len(champion):
        raise ValueError(f"{len(challenger)} challenger scores but {len(champion)} champion scores")
    out = []
    for mine, theirs in zip(challenger, champion):
        delta = float(mine) - float(theirs)
        out.append("win" if delta > tie_tolerance else "loss" if delta < -tie_tolerance else "tie")
    return out


def win_rate(results: Sequence[str]) -> float:
    if not results:
        raise ValueError("no prompts to compare")
    return (sum(r == "win" for r in results) + 0.5 * sum(r == "tie" for r in results)) / len(results)


def bootstrap_interval(results: Sequence[str], samples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """The win rate's percentile bootstrap interval over prompts."""
    values = np.array([1.0 if r == "win" else 0.5 if r == "tie" else 0.0 for r in results])
    rng = np.random.default_rng(seed)
    draws = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))


def category_deltas(categories: Sequence[str], challenger: Sequence[float], champion: Sequence[float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for category in dict.fromkeys(categories):  # in first-seen order
        picked = [i for i, c in enumerate(categories) if c == category]
        mine = float(np.mean([challenger[i] for i in picked]))
        theirs = float(np.mean([champion[i] for i in picked]))
        out[category] = {"prompts": len(picked), "challenger": mine, "champion": theirs, "delta": mine - theirs}
    return out


def compare(categories: Sequence[str], challenger: Sequence[float], champion: Sequence[float], tie_tolerance: float,
            bootstrap_samples: int = 2000, seed: int = 0) -> dict:
    results = outcomes(challenger, champion, tie_tolerance)
    low, high = bootstrap_interval(results, bootstrap_samples, seed=seed)
    return {
        "wins": results.count("win"),
        "ties": results.count("tie"),
        "losses": results.count("loss"),
        "win_rate": win_rate(results),
        "win_rate_ci95": [low, high],
        "outcomes": results,
        "categories": category_deltas(categories, challenger, champion),
    }
