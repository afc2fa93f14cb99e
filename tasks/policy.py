"""The promotion policy: when a challenger may replace the champion. Pure functions.

Rules (all must pass; the first model ever needs only (a) and (d)):
  (a) challenger macro-F1 >= the absolute floor;
  (b) lower bound of the paired-bootstrap 95% interval of (challenger - champion) macro-F1
      > min_delta;
  (c) no class's F1 drops by more than max_class_regression;
  (d) the data snapshot passed validation.
Among qualifying challengers the best macro-F1 wins; a tie goes to the cheaper (lower latency).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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


def judge(
    candidate: Candidate,
    champion: ModelEvaluation | None,
    snapshot_passed: bool,
    policy: PromotionPolicy,
) -> Verdict:
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
        if comparison is None:
            rules.append(RuleResult("beats_champion", False, "no comparison with the champion"))
        else:
            rules.append(RuleResult(
                "beats_champion",
                comparison.ci_low > policy.min_delta,
                f"macro-F1 difference {comparison.macro_f1_diff:+.4f}, 95% CI "
                f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]; lower bound must be > "
                f"{policy.min_delta:+.4f}",
            ))
        drops = {
            label: champion.per_class[label]["f1"] - ev.per_class.get(label, {"f1": 0.0})["f1"]
            for label in champion.per_class
        }
        worst_label = max(drops, key=lambda label: drops[label]) if drops else None
        worst = drops[worst_label] if worst_label else 0.0
        rules.append(RuleResult(
            "no_class_regression",
            worst <= policy.max_class_regression,
            f"largest per-class F1 drop {worst:+.4f} ({worst_label}); limit "
            f"{policy.max_class_regression:.4f}",
        ))
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
    verdicts = [judge(c, champion, snapshot_passed, policy) for c in challengers]
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
