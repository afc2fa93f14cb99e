"""The promotion policy: when a challenger may replace the champion. Pure functions.

Every challenger is scored with the champion on the same frozen test rows and the same
bootstrap resamples of them (``tasks.evaluate.compare``). Rules, all of which must pass:

(a) ``macro_f1_floor``: the challenger's macro-F1 is at least the floor;
(b) ``snapshot_validated``: the data snapshot passed validation;
(c) ``beats_champion``: the challenger is better than the champion by more than ``min_delta``.
    One-sided bootstrap test of H0 "macro-F1 difference <= min_delta", p-value
    (1 + #{resamples with difference <= min_delta}) / (1 + resamples), rejected with Holm's
    step-down procedure across all challengers of the run, so the chance of promoting a
    challenger that is no better stays at most ``alpha`` however many candidates there are;
(d) ``no_class_regression``: no class's F1 surely drops by more than ``max_class_regression``:
    a class vetoes only when the lower one-sided (1 - alpha / classes) bootstrap bound of its
    F1 drop exceeds the limit (Bonferroni over the judged classes). Classes with fewer than
    ``min_class_support`` test rows are too noisy to judge and are listed as not judged.

The first model ever (no champion) needs only (a) and (b). Among qualifying challengers the
best macro-F1 wins; a tie goes to the cheaper (lower latency) one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tasks.config import PromotionPolicy
from tasks.evaluate import Comparison, ModelEvaluation

TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Candidate:
    version: int
    evaluation: ModelEvaluation
    comparison: Comparison | None = None  # vs the champion, when there is one


@dataclass
class RuleResult:
    rule: str
    passed: bool
    detail: str


@dataclass
class Verdict:
    version: int
    kind: str
    macro_f1: float
    qualifies: bool
    rules: list[RuleResult] = field(default_factory=list)


@dataclass
class Decision:
    action: str  # "promote" or "keep"
    winner: int | None
    champion: int | None
    verdicts: list[Verdict]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def improvement_p_value(diff_resamples: Sequence[float], min_delta: float) -> float:
    """One-sided bootstrap p-value of H0 "challenger - champion macro-F1 <= min_delta"."""
    diffs = np.asarray(diff_resamples, dtype=float)
    if diffs.size == 0:
        return 1.0
    return float((1 + np.sum(diffs <= min_delta)) / (1 + diffs.size))


def holm_rejections(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level alpha."""
    m = len(p_values)
    rejected = [False] * m
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        if p_values[index] > alpha / (m - rank):
            break
        rejected[index] = True
    return rejected


def holm_threshold(p_values: Sequence[float], index: int, alpha: float) -> float:
    """The level Holm compares hypothesis ``index`` with (for the audit trail)."""
    rank = sorted(range(len(p_values)), key=lambda i: p_values[i]).index(index)
    return alpha / (len(p_values) - rank)


def class_regressions(comparison: Comparison, policy: PromotionPolicy) -> tuple[list[tuple[str, float, float]], list[str]]:
    """(label, observed drop, lower bound of the drop) for every judged class, and the labels
    left unjudged for want of test rows. Drop = champion F1 - challenger F1."""
    judged = [label for label, drops in comparison.class_drop_resamples.items()
              if drops and comparison.class_support.get(label, 0) >= policy.min_class_support]
    unjudged = sorted(set(comparison.class_drop_resamples) - set(judged))
    level = policy.alpha / max(1, len(judged))
    bounds = []
    for label in judged:
        drops = np.asarray(comparison.class_drop_resamples[label], dtype=float)
        bounds.append((label, float(np.median(drops)), float(np.quantile(drops, level))))
    return bounds, unjudged


def judge(
    candidate: Candidate,
    champion: ModelEvaluation | None,
    snapshot_passed: bool,
    policy: PromotionPolicy,
    beats: tuple[bool, float, float] | None = None,
) -> Verdict:
    """``beats`` = (Holm rejected, p-value, Holm threshold) of this challenger's improvement."""
    ev = candidate.evaluation
    rules = [
        RuleResult(
            "macro_f1_floor",
            ev.macro_f1 >= policy.macro_f1_floor,
            f"macro-F1 {ev.macro_f1:.4f} vs floor {policy.macro_f1_floor:.4f}",
        ),
        RuleResult(
            "snapshot_validated",
            snapshot_passed,
            "snapshot passed validation" if snapshot_passed else "snapshot failed validation",
        ),
    ]
    if champion is not None:
        comparison = candidate.comparison
        if comparison is None or not comparison.diff_resamples or beats is None:
            rules.append(RuleResult("beats_champion", False, "no comparison with the champion"))
            rules.append(RuleResult("no_class_regression", False, "no comparison with the champion"))
        else:
            rejected, p_value, threshold = beats
            rules.append(RuleResult(
                "beats_champion",
                rejected,
                f"macro-F1 difference {comparison.macro_f1_diff:+.4f}, 95% CI "
                f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]; one-sided bootstrap "
                f"p = {p_value:.4f} that it is not above {policy.min_delta:+.4f}, Holm level "
                f"{threshold:.4f}",
            ))
            bounds, unjudged = class_regressions(comparison, policy)
            vetoes = [(label, drop, low) for label, drop, low in bounds if low > policy.max_class_regression]
            worst = max(bounds, key=lambda b: b[2], default=None)
            detail = (
                f"{len(vetoes)} class(es) surely drop by more than {policy.max_class_regression:.4f}"
                + (f": {', '.join(f'{lab} {d:+.4f} (lower bound {lo:+.4f})' for lab, d, lo in vetoes)}"
                   if vetoes else "")
                + (f"; largest lower bound {worst[2]:+.4f} ({worst[0]}, median drop {worst[1]:+.4f})"
                   if worst and not vetoes else "")
                + f"; bound at level {policy.alpha:.3f}/{max(1, len(bounds))} per class"
                + (f"; not judged (under {policy.min_class_support} test rows): {', '.join(unjudged)}"
                   if unjudged else "")
            )
            rules.append(RuleResult("no_class_regression", not vetoes, detail))
    return Verdict(
        version=candidate.version,
        kind=ev.kind,
        macro_f1=ev.macro_f1,
        qualifies=all(r.passed for r in rules),
        rules=rules,
    )


def decide(
    candidates: list[Candidate],
    champion_version: int | None,
    champion: ModelEvaluation | None,
    snapshot_passed: bool,
    policy: PromotionPolicy,
) -> Decision:
    challengers = [c for c in candidates if c.version != champion_version]
    beats: list[tuple[bool, float, float] | None] = [None] * len(challengers)
    if champion is not None:
        tested = [i for i, c in enumerate(challengers) if c.comparison and c.comparison.diff_resamples]
        p_values = [improvement_p_value(challengers[i].comparison.diff_resamples, policy.min_delta)  # type: ignore[union-attr]
                    for i in tested]
        rejected = holm_rejections(p_values, policy.alpha)
        for j, i in enumerate(tested):
            beats[i] = (rejected[j], p_values[j], holm_threshold(p_values, j, policy.alpha))
    verdicts = [judge(c, champion, snapshot_passed, policy, b)
                for c, b in zip(challengers, beats, strict=True)]
    qualifying = [c for c, v in zip(challengers, verdicts, strict=True) if v.qualifies]
    if not qualifying:
        summary = (
            "no challenger qualified; champion kept"
            if champion_version is not None
            else "no candidate qualified; there is still no champion"
        )
        return Decision("keep", None, champion_version, verdicts, summary)
    best_f1 = max(c.evaluation.macro_f1 for c in qualifying)
    tied = [c for c in qualifying if best_f1 - c.evaluation.macro_f1 <= TIE_TOLERANCE]
    winner = min(tied, key=lambda c: c.evaluation.latency_ms_per_1000)
    summary = f"promote version {winner.version} ({winner.evaluation.kind}, macro-F1 {best_f1:.4f})"
    if len(tied) > 1:
        summary += f"; tie on macro-F1 broken by latency among {[c.version for c in tied]}"
    return Decision("promote", winner.version, champion_version, verdicts, summary)
