"""The promotion gate: whether a trained DiT may become the ``challenger``, and why, as a pure function
of its scores and the thresholds of ``evaluate`` (``gate_min_score``, ``gate_max_regression``).

    passes when   score >= gate_min_score
            and   score > the untrained floor (when one was scored)
            and   score >= champion - gate_max_regression (when there is a champion with a score)

No champion yet (no registered model, or no alias) is not a failure: the reasons say so. A champion
that could not be looked up is the caller's error to raise (evaluate fails), never "no champion".
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed
    notes: list[str] = field(default_factory=list)  # what else was weighed (the champion, or none yet)

    @property
    def reason(self) -> str:
        """``passed`` (what promotion checks for), or the failures."""
        return "passed" if self.passed else "; ".join(self.reasons)


def decide(
    score: float | None,
    min_score: float,
    max_regression: float,
    untrained_score: float | None = None,
    champion_score: float | None = None,
) -> GateDecision:
    if score is None:
        return GateDecision(False, ["no automatic score for this prompt set: review the samples"])
    failures = []
    if score < min_score:
        failures.append(f"score {score:.3f} < gate_min_score {min_score}")
    if untrained_score is not None and score <= untrained_score:
        failures.append(f"score {score:.3f} does not beat the untrained model's {untrained_score:.3f}")
    if champion_score is not None and score < champion_score - max_regression:
        failures.append(
            f"score {score:.3f} regresses from the champion's {champion_score:.3f} by more than gate_max_regression {max_regression}"
        )
    if champion_score is None:
        notes = ["no champion yet"]
    else:
        notes = [f"champion {champion_score:.3f}, delta {score - champion_score:+.3f}"]
    return GateDecision(not failures, failures, notes)
