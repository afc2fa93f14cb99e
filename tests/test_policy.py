"""Promotion policy as properties (hypothesis): the rules can never be bypassed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks.config import PromotionPolicy
from tasks.evaluate import Comparison, ModelEvaluation
from tasks.policy import Candidate, decide

LABELS = ["neg", "neu", "pos"]
f1s = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def evaluation(name: str, per_class_f1: list[float], latency: float = 10.0) -> ModelEvaluation:
    macro = sum(per_class_f1) / len(per_class_f1)
    return ModelEvaluation(
        name=name, kind=name.split()[-1], labels=LABELS, n=100, accuracy=macro, macro_f1=macro,
        weighted_f1=macro,
        per_class={label: {"precision": f, "recall": f, "f1": f, "support": 33}
                   for label, f in zip(LABELS, per_class_f1, strict=True)},
        confusion_matrix=[[0] * 3] * 3, log_loss=1.0, ece=0.1, latency_ms_per_1000=latency,
        predictions=[],
    )


def comparison(challenger: ModelEvaluation, champion: ModelEvaluation, low: float, high: float):
    return Comparison(
        challenger=challenger.name, champion=champion.name,
        macro_f1_diff=challenger.macro_f1 - champion.macro_f1, ci_low=low, ci_high=high,
        n_resamples=1000, seed=0, mcnemar_statistic=0.0, mcnemar_p_value=1.0, b=0, c=0,
    )


@hsettings(max_examples=300, deadline=None)
@given(
    challenger_f1=st.lists(f1s, min_size=3, max_size=3),
    champion_f1=st.lists(f1s, min_size=3, max_size=3),
    ci=st.tuples(st.floats(-0.5, 0.5), st.floats(0, 0.5)),
    min_delta=st.floats(-0.1, 0.1),
    max_regression=st.floats(0, 0.2),
    validated=st.booleans(),
)
def test_promotion_never_bypasses_a_rule(challenger_f1, champion_f1, ci, min_delta,
                                         max_regression, validated):
    policy = PromotionPolicy(macro_f1_floor=0.3, min_delta=min_delta,
                             max_class_regression=max_regression)
    champ = evaluation("v1 tfidf", champion_f1)
    chall = evaluation("v2 bert", challenger_f1)
    low = ci[0]
    cand = Candidate(2, chall, comparison(chall, champ, low, low + ci[1]))
    decision = decide([cand], 1, champ, validated, policy)

    worst_drop = max(c - h for c, h in zip(champion_f1, challenger_f1, strict=True))
    if decision.action == "promote":
        assert decision.winner == 2
        assert low > min_delta
        assert worst_drop <= max_regression
        assert chall.macro_f1 >= policy.macro_f1_floor
        assert validated
    else:
        assert decision.winner is None
        failed = {r.rule for r in decision.verdicts[0].rules if not r.passed}
        assert failed, "a kept champion must name the rule that failed"
    if low <= min_delta:
        assert decision.action == "keep"
    if worst_drop > max_regression:
        assert decision.action == "keep"


@given(f1=f1s, validated=st.booleans())
def test_first_model_needs_only_the_floor_and_validation(f1, validated):
    policy = PromotionPolicy(macro_f1_floor=0.5)
    decision = decide([Candidate(1, evaluation("v1 tfidf", [f1] * 3))], None, None, validated,
                      policy)
    assert (decision.action == "promote") == (f1 >= 0.5 and validated)
    assert {r.rule for r in decision.verdicts[0].rules} == {"macro_f1_floor", "snapshot_validated"}


def test_best_qualifier_wins_and_ties_go_to_the_cheaper_model():
    policy = PromotionPolicy(macro_f1_floor=0.1)
    slow = Candidate(2, evaluation("v2 bert", [0.8] * 3, latency=900.0))
    fast = Candidate(3, evaluation("v3 tfidf", [0.8] * 3, latency=5.0))
    worse = Candidate(4, evaluation("v4 tfidf", [0.7] * 3, latency=1.0))
    decision = decide([slow, fast, worse], None, None, True, policy)
    assert decision.winner == 3
    assert "tie" in decision.summary
    better = Candidate(5, evaluation("v5 bert", [0.81] * 3, latency=900.0))
    assert decide([slow, fast, better], None, None, True, policy).winner == 5


def test_the_champion_is_never_its_own_challenger():
    champ = evaluation("v1 tfidf", [0.9] * 3)
    decision = decide([Candidate(1, champ)], 1, champ, True, PromotionPolicy())
    assert decision.action == "keep" and decision.verdicts == []
