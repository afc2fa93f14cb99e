"""The promotion policy: when a challenger may replace the champion. Pure functions.

Every challenger is scored with the champion on the same frozen test rows and the same
bootstrap resamples of them (``tasks.evaluate.compare``). Rules, all of which must pass:

(a) ``macro_f1_floor``: the challenger's macro-F1 is at least the floor;
(b) ``snapshot_validated``: the data snapshot passed validation;
(c) ``beats_champion``: the challenger is better than the champion by more than ``min_delta``.
    One-sided bootstrap-z test of H0 "macro-F1 difference <= min_delta" (the normal tail of
    the resamples' mean and spread, so p-values far below 1/resamples are resolved), rejected
    with Holm's step-down procedure across the run's challengers at this night's level of the
    champion's lifetime budget (``night_level``): over any ``lifetime_nights`` nights of one
    champion's reign the levels add up to ``alpha``, so by the union bound the chance of any
    promotion of a challenger that is no better stays at most ``alpha`` over those nights,
    however the nights' tests depend on each other (same test rows, same champion);
(d) ``no_class_regression``: no class's F1 drops by more than ``max_class_regression``. A
    class with at least ``min_class_support`` test rows vetoes when its estimated drop (median
    of the bootstrap drops) exceeds the cap and the drop is significant: the lower one-sided
    (1 - alpha / classes) bootstrap bound of the drop is above zero. So a class that does not
    drop is vetoed at most ``alpha`` (Bonferroni over the judged classes) at any test size, and
    with enough test rows every drop beyond the cap is vetoed; the chance of catching a drop
    of twice the cap at the present test size is computed per class and shown.

The first model ever (no champion) needs only (a) and (b). Among qualifying challengers the
best macro-F1 wins; a tie goes to the cheaper (lower latency) one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.config import PromotionPolicy

if TYPE_CHECKING:  # the registry page imports this module: scipy (via evaluate) costs seconds
    from tasks.evaluate import Comparison, ModelEvaluation

TIE_TOLERANCE = 1e-9
# Share of each lifetime window's alpha spent front-loaded (night k of the window gets a share
# proportional to 1/k^2) rather than evenly. Front-loading promotes a clearly better challenger
# within a few nights of a champion's promotion; the even tenth keeps a floor for one that
# arrives late in a reign (tests/test_policy.py simulates both).
FRONT_SHARE = 0.9
# A class veto is expected to catch a drop of twice the cap at least this often; below it the
# audit trail says the test rows are too few to enforce the cap.
CLASS_VETO_POWER = 0.8


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


@dataclass(frozen=True)
class JudgedNight:
    """A night already judged against the reigning champion, as its decision recorded it."""

    interval_end: datetime
    night: int
    level: float


@dataclass(frozen=True)
class NightBudget:
    """This night's share of the champion's lifetime error budget."""

    night: int  # 1 = the first night judged against this champion
    level: float  # the family-wise level of tonight's Holm procedure
    spent_before: float  # alpha already spent in this window by other nights
    window_nights: int
    rerun: bool = False  # this date was judged before: its level is spent, nothing is left

    @property
    def window(self) -> int:
        return (self.night - 1) // self.window_nights + 1

    def describe(self, alpha: float) -> str:
        text = (f"lifetime budget: night {self.night} of this champion's reign, level {self.level:.2e}; "
                f"{self.spent_before + self.level:.4f} of alpha {alpha:.3f} spent in window {self.window} "
                f"({self.window_nights} nights)")
        return text + (" (a re-run of a night already judged: that night spent its level; a re-run "
                       "only gets what is left, nothing, so the next night judges these challengers)"
                       if self.rerun else "")


@dataclass
class Decision:
    action: str  # "promote" or "keep"
    winner: int | None
    champion: int | None
    verdicts: list[Verdict]
    summary: str
    budget: dict[str, Any] | None = None  # NightBudget fields, and whether a test spent it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def improvement_p_value(diff_resamples: Sequence[float], min_delta: float) -> float:
    """One-sided bootstrap-z p-value of H0 "challenger - champion macro-F1 <= min_delta": the
    normal tail of the resamples, P(Z > (mean - min_delta) / sd). Counting resamples at or below
    the margin cannot go under 1/(resamples + 1), far above the levels of late nights."""
    diffs = np.asarray(diff_resamples, dtype=float)
    if diffs.size == 0:
        return 1.0
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0
    if sd == 0.0:
        return 0.0 if mean > min_delta else 1.0
    return normal_sf((mean - min_delta) / sd)


def holm_rejections(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level alpha."""
    m = len(p_values)
    rejected = [False] * m
    if alpha <= 0:  # nothing left to spend: even p = 0 (no spread in the resamples) is not enough
        return rejected
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        if p_values[index] > alpha / (m - rank):
            break
        rejected[index] = True
    return rejected


def holm_threshold(p_values: Sequence[float], index: int, alpha: float) -> float:
    """The level Holm compares hypothesis ``index`` with (for the audit trail)."""
    rank = sorted(range(len(p_values)), key=lambda i: p_values[i]).index(index)
    return alpha / (len(p_values) - rank)


def night_level(night: int, policy: PromotionPolicy) -> float:
    """Alpha of night ``night`` of a champion's reign. The reign is cut into windows of
    ``lifetime_nights`` nights whose levels sum to exactly ``alpha``: night k of a window gets
    alpha * (FRONT_SHARE * (1/k^2) / sum_j 1/j^2 + (1 - FRONT_SHARE) / lifetime_nights)."""
    if night < 1:
        raise ValueError(f"nights are counted from 1, got {night}")
    n = policy.lifetime_nights
    k = (night - 1) % n + 1
    front = (1.0 / k**2) / sum(1.0 / j**2 for j in range(1, n + 1))
    return policy.alpha * (FRONT_SHARE * front + (1.0 - FRONT_SHARE) / n)


def night_levels(policy: PromotionPolicy, nights: int) -> np.ndarray:
    """night_level of nights 1..``nights``, as one array (for simulations and charts)."""
    n = policy.lifetime_nights
    k = (np.arange(nights) % n) + 1.0
    front = (1.0 / k**2) / np.sum(1.0 / np.arange(1, n + 1) ** 2)
    return policy.alpha * (FRONT_SHARE * front + (1.0 - FRONT_SHARE) / n)


def night_budget(tested: Sequence[JudgedNight], interval_end: datetime, policy: PromotionPolicy) -> NightBudget:
    """This run's night of the reign from the nights already judged against the champion.

    Nights are data intervals, not runs. Every challenger ever judged on a date belongs to that
    date's one family: its first judged run spent the date's level, so a re-run of the date (new
    challengers, another grid, a candidate that failed the first time) tests at level 0 and
    cannot promote; re-running a date until something passes would otherwise buy fresh alpha.
    A retry of the same run replays its recorded decision and never gets here. A new date (a
    backfill of a date inside the reign too) is the next night, in the order judged."""
    by_end = {t.interval_end: t for t in sorted(tested, key=lambda t: t.night)}
    n = policy.lifetime_nights
    previous = by_end.get(interval_end)
    night = previous.night if previous else len(by_end) + 1
    level = 0.0 if previous else night_level(night, policy)
    window = (night - 1) // n
    spent = sum(t.level for t in by_end.values()
                if (t.night - 1) // n == window and t.interval_end != interval_end)
    return NightBudget(night=night, level=level, spent_before=spent, window_nights=n,
                       rerun=previous is not None)


def class_regressions(comparison: Comparison, policy: PromotionPolicy) -> tuple[list[dict[str, Any]], list[str]]:
    """For every judged class: label, estimated drop (median of the bootstrap drops, champion F1
    minus challenger F1), lower (1 - alpha / classes) bound, whether it vetoes, and the chance
    that a true drop of twice the cap would be vetoed at this test size. Also the labels left
    unjudged for want of test rows."""
    judged = [label for label, drops in comparison.class_drop_resamples.items()
              if drops and comparison.class_support.get(label, 0) >= policy.min_class_support]
    unjudged = sorted(set(comparison.class_drop_resamples) - set(judged))
    level = policy.alpha / max(1, len(judged))
    cap = policy.max_class_regression
    out = []
    for label in judged:
        drops = np.asarray(comparison.class_drop_resamples[label], dtype=float)
        drop, low = float(np.median(drops)), float(np.quantile(drops, level))
        # The veto fires when the estimate exceeds max(cap, its own lower-tail width): with a
        # true drop of 2 * cap the estimate is about normal around it with the resamples' spread.
        threshold, spread = max(cap, drop - low), float(drops.std())
        power = 1.0 if spread == 0 else normal_sf((threshold - 2 * cap) / spread)
        out.append({"label": label, "drop": drop, "low": low, "vetoes": drop > cap and low > 0,
                    "power": power})
    return out, unjudged


def class_rule(comparison: Comparison, policy: PromotionPolicy) -> RuleResult:
    classes, unjudged = class_regressions(comparison, policy)
    cap = policy.max_class_regression
    vetoes = [c for c in classes if c["vetoes"]]
    worst = max(classes, key=lambda c: c["drop"], default=None)
    weakest = min((c["power"] for c in classes), default=None)
    detail = (
        f"{len(vetoes)} class(es) drop by more than {cap:.4f}"
        + (": " + ", ".join(f"{c['label']} {c['drop']:+.4f} (lower bound {c['low']:+.4f})" for c in vetoes)
           if vetoes else "")
        + (f"; largest drop {worst['drop']:+.4f} ({worst['label']}, lower bound {worst['low']:+.4f})"
           if worst and not vetoes else "")
        + f"; a class vetoes when its drop exceeds the cap and its lower bound at level "
          f"{policy.alpha:.3f}/{max(1, len(classes))} is above 0"
        + (f"; a drop of {2 * cap:.2f} would be caught with probability {weakest:.0%}"
           + (" (too few test rows to enforce the cap)" if weakest < CLASS_VETO_POWER else "")
           if weakest is not None else "")
        + (f"; not judged (under {policy.min_class_support} test rows): {', '.join(unjudged)}"
           if unjudged else "")
    )
    return RuleResult("no_class_regression", not vetoes, detail)


def judge(
    candidate: Candidate,
    champion: ModelEvaluation | None,
    snapshot_passed: bool,
    policy: PromotionPolicy,
    beats: tuple[bool, float, float] | None = None,
    budget: NightBudget | None = None,
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
                f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]; one-sided bootstrap-z "
                f"p = {p_value:.2e} that it is not above {policy.min_delta:+.4f}, Holm level "
                f"{threshold:.2e}" + (f"; {budget.describe(policy.alpha)}" if budget else ""),
            ))
            rules.append(class_rule(comparison, policy))
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
    budget: NightBudget | None = None,
) -> Decision:
    """``budget``: this night's share of the champion's lifetime budget (the pipeline always
    passes it); without one the whole ``alpha`` is spent on this single decision."""
    challengers = [c for c in candidates if c.version != champion_version]
    beats: list[tuple[bool, float, float] | None] = [None] * len(challengers)
    level = budget.level if budget else policy.alpha
    tested = []
    if champion is not None:
        tested = [i for i, c in enumerate(challengers) if c.comparison and c.comparison.diff_resamples]
        p_values = [improvement_p_value(challengers[i].comparison.diff_resamples, policy.min_delta)  # type: ignore[union-attr]
                    for i in tested]
        rejected = holm_rejections(p_values, level)
        for j, i in enumerate(tested):
            beats[i] = (rejected[j], p_values[j], holm_threshold(p_values, j, level))
    verdicts = [judge(c, champion, snapshot_passed, policy, b, budget)
                for c, b in zip(challengers, beats, strict=True)]
    budget_record = {**asdict(budget), "alpha": policy.alpha, "spent": bool(tested) and not budget.rerun} \
        if budget else None
    qualifying = [c for c, v in zip(challengers, verdicts, strict=True) if v.qualifies]
    unjudged = untested_classes(challengers)
    note = (f"; class(es) with no test rows, which this decision cannot judge: {', '.join(map(repr, unjudged))} "
            "(label more rows of them)" if unjudged else "")
    if not qualifying:
        summary = (
            "no challenger qualified; champion kept"
            if champion_version is not None
            else "no candidate qualified; there is still no champion"
        )
        return Decision("keep", None, champion_version, verdicts, summary + note, budget_record)
    best_f1 = max(c.evaluation.macro_f1 for c in qualifying)
    tied = [c for c in qualifying if best_f1 - c.evaluation.macro_f1 <= TIE_TOLERANCE]
    winner = min(tied, key=lambda c: c.evaluation.latency_ms_per_1000)
    summary = f"promote version {winner.version} ({winner.evaluation.kind}, macro-F1 {best_f1:.4f})"
    if len(tied) > 1:
        summary += f"; tie on macro-F1 broken by latency among {[c.version for c in tied]}"
    return Decision("promote", winner.version, champion_version, verdicts, summary + note, budget_record)


def untested_classes(candidates: Sequence[Candidate]) -> list[str]:
    """Labels of the set without a single test row: the test macro-F1 and the class rule say
    nothing about them, so a decision says so."""
    if not candidates:
        return []
    per_class = candidates[0].evaluation.per_class
    return [label for label, scores in per_class.items() if not scores.get("support")]
