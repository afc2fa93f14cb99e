"""The promotion policy: its rules can never be bypassed (properties), its statistics match a
reference, and its error rates hold in simulation: a challenger that is no better than the
champion is promoted, or a class falsely vetoed, at most at the nominal rate (5%), whatever
the number of challengers; a truly better one is promoted with the power stated below."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from scipy import stats
from scipy.optimize import brentq

from tasks.config import PromotionPolicy
from tasks.evaluate import Comparison, ModelEvaluation, compare, evaluation_from_probabilities
from tasks.policy import (
    FRONT_SHARE,
    Candidate,
    JudgedNight,
    decide,
    holm_rejections,
    improvement_p_value,
    night_budget,
    night_level,
    night_levels,
)

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


def comparison(challenger: ModelEvaluation, champion: ModelEvaluation, diffs, drops,
               support: int = 100) -> Comparison:
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Comparison(
        challenger=challenger.name, champion=champion.name,
        macro_f1_diff=challenger.macro_f1 - champion.macro_f1, ci_low=float(low), ci_high=float(high),
        n_resamples=len(diffs), seed=0, mcnemar_statistic=0.0, mcnemar_p_value=1.0, b=0, c=0,
        diff_resamples=list(diffs), class_drop_resamples=dict(zip(LABELS, map(list, drops), strict=True)),
        class_support=dict.fromkeys(LABELS, support),
    )


# --- the statistics against references -------------------------------------------------------


def test_improvement_p_value_is_the_normal_tail_of_the_resamples():
    rng = np.random.default_rng(3)
    diffs = 0.02 + 0.01 * rng.standard_normal(1000)
    z = (diffs.mean() - 0.0) / diffs.std(ddof=1)
    assert improvement_p_value(diffs, 0.0) == pytest.approx(stats.norm.sf(z), rel=1e-9)  # scipy
    # Where resamples can resolve it, it agrees with counting them (a plain loop) ...
    counted = (1 + sum(1 for d in diffs if d <= 0.0)) / (1 + len(diffs))
    assert improvement_p_value(diffs, 0.0) == pytest.approx(counted, abs=0.015)
    # ... and it goes far below 1/(resamples + 1), which the levels of late nights need.
    assert improvement_p_value(diffs + 0.03, 0.0) < 1e-4 < 1 / 1001
    assert improvement_p_value([], 0.0) == 1.0
    assert (improvement_p_value(np.full(5, 0.1), 0.0), improvement_p_value(np.full(5, -0.1), 0.0)) == (0.0, 1.0)


def holm_reference(p_values, alpha):
    """Holm via adjusted p-values: p_adj(i) = max over j <= i of min(1, (m - j + 1) p(j))."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted, running = np.empty(m), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return [bool(a <= alpha) for a in adjusted]


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=8), st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_matches_the_adjusted_p_value_definition(p_values, alpha):
    assert holm_rejections(p_values, alpha) == holm_reference(p_values, alpha)


# --- properties: no rule can be bypassed ------------------------------------------------------


@hsettings(max_examples=300, deadline=None)
@given(
    challenger_f1=st.lists(f1s, min_size=3, max_size=3),
    champion_f1=st.lists(f1s, min_size=3, max_size=3),
    shift=st.floats(-0.2, 0.2), spread=st.floats(0.001, 0.1),
    drop_shift=st.lists(st.floats(-0.2, 0.3), min_size=3, max_size=3),
    min_delta=st.floats(-0.1, 0.1), max_regression=st.floats(0, 0.2), validated=st.booleans(),
    support=st.integers(0, 100),
)
def test_promotion_never_bypasses_a_rule(challenger_f1, champion_f1, shift, spread, drop_shift,
                                         min_delta, max_regression, validated, support):
    policy = PromotionPolicy(macro_f1_floor=0.3, min_delta=min_delta,
                             max_class_regression=max_regression)
    rng = np.random.default_rng(0)
    diffs = shift + spread * rng.standard_normal(1000)
    drops = [d + spread * rng.standard_normal(1000) for d in drop_shift]
    champ = evaluation("v1 tfidf", champion_f1)
    chall = evaluation("v2 bert", challenger_f1)
    decision = decide([Candidate(2, chall, comparison(chall, champ, diffs, drops, support))], 1,
                      champ, validated, policy)
    if decision.action == "promote":
        assert decision.winner == 2 and validated and chall.macro_f1 >= 0.3
        assert improvement_p_value(diffs, min_delta) <= policy.alpha
        if support >= policy.min_class_support:  # no class both over the cap and surely dropping
            assert not any(np.median(d) > max_regression and np.quantile(d, policy.alpha / 3) > 0
                           for d in drops)
    verdict = decision.verdicts[0]
    assert [r.rule for r in verdict.rules] == [
        "macro_f1_floor", "snapshot_validated", "beats_champion", "no_class_regression"]
    assert verdict.qualifies == all(r.passed for r in verdict.rules)


def test_first_model_needs_only_the_floor_and_validation():
    policy = PromotionPolicy(macro_f1_floor=0.5)
    good, weak = evaluation("v1 tfidf", [0.7, 0.6, 0.8]), evaluation("v2 bert", [0.3, 0.4, 0.2])
    decision = decide([Candidate(1, good), Candidate(2, weak)], None, None, True, policy)
    assert (decision.action, decision.winner) == ("promote", 1)
    assert [r.rule for r in decision.verdicts[0].rules] == ["macro_f1_floor", "snapshot_validated"]
    assert decide([Candidate(1, good)], None, None, False, policy).action == "keep"


def test_best_qualifier_wins_and_ties_go_to_the_cheaper_model():
    policy = PromotionPolicy()
    champ = evaluation("v1 tfidf", [0.5, 0.5, 0.5])
    sure = np.full(1000, 0.2)
    fast = evaluation("v2 tfidf", [0.7, 0.7, 0.7], latency=5.0)
    slow = evaluation("v3 bert", [0.7, 0.7, 0.7], latency=50.0)
    flat = [np.full(1000, -0.2)] * 3
    decision = decide([Candidate(3, slow, comparison(slow, champ, sure, flat)),
                       Candidate(2, fast, comparison(fast, champ, sure, flat))], 1, champ, True, policy)
    assert (decision.action, decision.winner) == ("promote", 2)
    assert "broken by latency" in decision.summary


def test_the_champion_is_never_its_own_challenger():
    champ = evaluation("v1 tfidf", [0.9, 0.9, 0.9])
    decision = decide([Candidate(1, champ)], 1, champ, True, PromotionPolicy())
    assert decision.verdicts == [] and decision.action == "keep"


def test_a_rare_class_is_listed_as_not_judged():
    champ = evaluation("v1 tfidf", [0.5, 0.5, 0.5])
    chall = evaluation("v2 bert", [0.9, 0.9, 0.1])
    drops = [np.full(1000, -0.4), np.full(1000, -0.4), np.full(1000, 0.4)]
    cmp = comparison(chall, champ, np.full(1000, 0.1), drops)
    cmp.class_support["pos"] = 5
    verdict = decide([Candidate(2, chall, cmp)], 1, champ, True, PromotionPolicy()).verdicts[0]
    rule = verdict.rules[-1]
    assert rule.passed and "not judged (under 30 test rows): pos" in rule.detail
    cmp.class_support["pos"] = 30
    assert not decide([Candidate(2, chall, cmp)], 1, champ, True, PromotionPolicy()).verdicts[0].rules[-1].passed


def test_the_class_rule_states_its_chance_of_catching_twice_the_cap():
    """The stated power against the normal approximation it rests on (scipy), and a warning
    when the test rows are too few for 80%."""
    policy = PromotionPolicy()
    champ, chall = evaluation("v1 tfidf", [0.7] * 3), evaluation("v2 bert", [0.7] * 3)
    rng = np.random.default_rng(2)
    for spread in (0.0145, 0.06):  # about 1,000 and about 60 test rows per class
        drops = [spread * rng.standard_normal(4000) for _ in LABELS]
        rule = decide([Candidate(2, chall, comparison(chall, champ, np.full(4000, 0.01), drops, support=1000))],
                      1, champ, True, policy).verdicts[0].rules[-1]
        powers = []
        for d in drops:
            threshold = max(0.05, np.median(d) - np.quantile(d, 0.05 / 3))
            powers.append(stats.norm.sf((threshold - 0.10) / d.std()))
        assert f"caught with probability {min(powers):.0%}" in rule.detail
        assert ("too few test rows" in rule.detail) == (min(powers) < 0.8)
    assert "too few test rows" in rule.detail  # the small test set (last) is flagged


# --- simulations: error rates of the whole decision --------------------------------------------

N_TEST_ROWS = 800
N_CLASSES = 3


def simulated_models(rng, accuracies: list[float], rows: int):
    """y_true and one prediction vector per accuracy, errors independent across models and
    uniform over the other classes (the hardest case: every error is a discordant pair)."""
    y = rng.integers(0, N_CLASSES, rows)
    out = []
    for accuracy in accuracies:
        wrong = (y + rng.integers(1, N_CLASSES, rows)) % N_CLASSES
        out.append(np.where(rng.random(rows) < accuracy, y, wrong))
    return y, out


def run_decisions(n_simulations: int, champion_accuracy: float, challenger_accuracies: list[float],
                  seed: int, rows: int = N_TEST_ROWS, policy: PromotionPolicy | None = None):
    """(promotions, challengers vetoed by some class) over the simulations."""
    policy = policy or PromotionPolicy()
    rng = np.random.default_rng(seed)
    labels = [f"c{i}" for i in range(N_CLASSES)]
    promotions = vetoes = 0
    for s in range(n_simulations):
        y, (champion, *challengers) = simulated_models(rng, [champion_accuracy, *challenger_accuracies],
                                                       rows)
        champ = evaluation_from_probabilities("v1 a", "a", labels, y, np.eye(N_CLASSES)[champion])
        candidates = []
        for i, predictions in enumerate(challengers, start=2):
            ev = evaluation_from_probabilities(f"v{i} b", "b", labels, y, np.eye(N_CLASSES)[predictions])
            candidates.append(Candidate(i, ev, compare(ev, champ, y, n_resamples=policy.bootstrap_resamples,
                                                       seed=s)))
        decision = decide(candidates, 1, champ, True, policy)
        promotions += decision.action == "promote"
        vetoes += sum(not v.rules[-1].passed for v in decision.verdicts)
    return promotions, vetoes


def not_above(count: int, n: int, rate: float) -> bool:
    """The observed count is not significantly above ``rate`` (one-sided binomial, p > 0.001)."""
    return stats.binom.sf(count - 1, n, rate) > 0.001


@pytest.mark.slow
@pytest.mark.parametrize("n_challengers", [1, 3])
def test_a_challenger_no_better_than_the_champion_is_promoted_at_most_5_percent(n_challengers):
    n = 300
    promotions, vetoes = run_decisions(n, 0.75, [0.75] * n_challengers, seed=n_challengers)
    judged = n * n_challengers
    print(f"\n{n_challengers} equal challenger(s): promoted {promotions}/{n}, class veto {vetoes}/{judged}")
    assert not_above(promotions, n, 0.05), promotions
    # A challenger whose classes do not drop is vetoed at most alpha (over its classes), even on
    # 800 test rows, where the bound (not the cap) decides; point estimates used to veto 13-19%.
    assert not_above(vetoes, judged, 0.05), vetoes


@pytest.mark.slow
@pytest.mark.parametrize(("rows", "power"), [(800, 0.5), (2000, 0.9)])
def test_a_truly_better_challenger_is_promoted_with_the_stated_power(rows, power):
    """Accuracy 0.80 vs 0.75 (macro-F1 about +0.05), 3 balanced classes, independent errors:
    measured 65/100 promotions at 800 test rows and 100/100 at 2,000 (the README states these)."""
    n = 100
    promotions, vetoes = run_decisions(n, 0.75, [0.80], seed=11, rows=rows)
    print(f"\nbetter challenger, {rows} test rows: promoted {promotions}/{n}, vetoed {vetoes}/{n}")
    assert promotions >= power * n, promotions
    assert vetoes <= 5, vetoes


@pytest.mark.slow
def test_a_class_that_really_regresses_is_vetoed():
    """Overall better, but one class drops far beyond the limit: the veto catches it."""
    rng = np.random.default_rng(5)
    labels = [f"c{i}" for i in range(N_CLASSES)]
    vetoed = 0
    for s in range(50):
        y = rng.integers(0, N_CLASSES, N_TEST_ROWS)
        champion = np.where(rng.random(N_TEST_ROWS) < 0.75, y, (y + 1) % N_CLASSES)
        # Perfect on classes 0 and 1, right on a third of class 2: class 2's F1 drops from 0.75
        # to about 0.5, far beyond the 0.05 limit.
        accuracy = np.where(y == 2, 0.33, 1.0)
        challenger = np.where(rng.random(N_TEST_ROWS) < accuracy, y, (y + 1) % N_CLASSES)
        champ = evaluation_from_probabilities("v1 a", "a", labels, y, np.eye(N_CLASSES)[champion])
        chall = evaluation_from_probabilities("v2 b", "b", labels, y, np.eye(N_CLASSES)[challenger])
        decision = decide([Candidate(2, chall, compare(chall, champ, y, seed=s))], 1, champ, True,
                          PromotionPolicy())
        vetoed += not decision.verdicts[0].rules[-1].passed
    assert vetoed >= 45, vetoed


# --- the champion's lifetime budget ------------------------------------------------------------

END = datetime(2026, 11, 20, 2, tzinfo=UTC)


def test_night_levels_spend_exactly_alpha_per_window_front_loaded():
    policy = PromotionPolicy(alpha=0.05, lifetime_nights=365)
    levels = night_levels(policy, 3 * 365)
    assert levels[:365].sum() == pytest.approx(0.05)  # the union bound's whole budget, no more
    assert np.allclose(levels[365:730], levels[:365])  # a reign longer than a window starts the next
    # A plain loop of the stated formula.
    squares = sum(1 / j**2 for j in range(1, 366))
    for night in (1, 2, 3, 10, 365, 366, 700):
        k = (night - 1) % 365 + 1
        expected = 0.05 * (FRONT_SHARE * (1 / k**2) / squares + (1 - FRONT_SHARE) / 365)
        assert night_level(night, policy) == pytest.approx(expected) == levels[night - 1]
    assert np.all(np.diff(levels[:365]) <= 0) and levels[364] >= 0.05 * (1 - FRONT_SHARE) / 365
    with pytest.raises(ValueError):
        night_level(0, policy)


def test_a_rerun_of_a_date_has_nothing_left_to_spend_and_a_new_date_is_the_next_night():
    policy = PromotionPolicy(lifetime_nights=3)
    judged = [JudgedNight(END + timedelta(days=d), d + 1, night_level(d + 1, policy)) for d in range(4)]
    first = night_budget([], END, policy)
    assert (first.night, first.level, first.spent_before, first.rerun) == (1, night_level(1, policy), 0.0, False)
    again = night_budget(judged, END + timedelta(days=1), policy)  # a re-run (or retry) of night 2
    assert (again.night, again.level, again.rerun) == (2, 0.0, True)  # night 2 spent its level
    assert again.spent_before == pytest.approx(judged[0].level + judged[2].level)  # not its own twice
    backfill = night_budget(judged, END - timedelta(days=9), policy)  # a new date inside the reign
    assert (backfill.night, backfill.rerun, backfill.window) == (5, False, 2)
    assert backfill.spent_before == pytest.approx(judged[3].level)  # window 2 began on night 4
    assert backfill.level == pytest.approx(night_level(2, policy))


def test_the_decision_records_the_budget_and_tests_at_the_nights_level():
    policy = PromotionPolicy()
    champ = evaluation("v1 tfidf", [0.5, 0.5, 0.5])
    chall = evaluation("v2 bert", [0.55, 0.55, 0.55])
    rng = np.random.default_rng(0)
    diffs = 0.05 + 0.0185 * rng.standard_normal(1000)  # p about 0.003
    flat = [np.full(1000, -0.05)] * 3
    candidates = [Candidate(2, chall, comparison(chall, champ, diffs, flat, support=1000))]
    p = improvement_p_value(diffs, 0.0)
    night1, night9 = night_budget([], END, policy), night_budget(
        [JudgedNight(END + timedelta(days=d), d + 1, night_level(d + 1, policy)) for d in range(8)], END + timedelta(days=8), policy)
    assert night9.level < p < night1.level
    promoted = decide(candidates, 1, champ, True, policy, night1)
    kept = decide(candidates, 1, champ, True, policy, night9)
    assert (promoted.action, kept.action) == ("promote", "keep")
    assert kept.budget == {"night": 9, "level": night9.level, "spent_before": night9.spent_before,
                           "window_nights": 365, "rerun": False, "alpha": 0.05, "spent": True}
    detail = kept.verdicts[0].rules[2].detail
    assert "night 9 of this champion's reign" in detail and f"{night9.level:.2e}" in detail
    assert decide([], 1, champ, True, policy, night1).budget["spent"] is False  # nothing tested


# --- simulations at the demo's size: the class cap and the lifetime budget ----------------------
# Vectorised: a bootstrap over rows is a multinomial draw over the (truth, challenger, champion)
# patterns, so each decision below is the real decide() on real bootstrap resamples without
# drawing a million row indices; nightly statistics come from per-class binomial counts.

DEMO_TEST_ROWS = 2969
DEMO_CLASS_ROWS = np.array([990, 990, 989])


def pattern_comparison(rng, y, challenger, champion, resamples: int = 1000) -> Comparison:
    """What tasks.evaluate.compare returns, bootstrapping pattern counts instead of rows."""
    k = N_CLASSES
    patterns = np.arange(k**3)
    truth, a, b = patterns // k**2, patterns // k % k, patterns % k
    onehot = np.eye(k)
    support, pred_a, pred_b = onehot[truth], onehot[a], onehot[b]
    hits_a, hits_b = support * (a == truth)[:, None], support * (b == truth)[:, None]
    counts = np.bincount((y * k + challenger) * k + champion, minlength=k**3)
    draws = np.vstack([counts, rng.multinomial(len(y), counts / len(y), size=resamples)])

    def f1(hits, predicted):
        denominator = draws @ (support + predicted)
        return np.divide(2 * (draws @ hits), denominator, out=np.zeros_like(denominator, dtype=float),
                         where=denominator > 0)

    f1_a, f1_b = f1(hits_a, pred_a), f1(hits_b, pred_b)
    diffs, drops = f1_a.mean(1) - f1_b.mean(1), f1_b - f1_a
    low, high = np.percentile(diffs[1:], [2.5, 97.5])
    return Comparison(
        challenger="v2 b", champion="v1 a", macro_f1_diff=float(diffs[0]), ci_low=float(low),
        ci_high=float(high), n_resamples=resamples, seed=0, mcnemar_statistic=0.0, mcnemar_p_value=1.0,
        b=0, c=0, diff_resamples=list(diffs[1:]),
        class_drop_resamples={f"c{i}": list(drops[1:, i]) for i in range(k)},
        class_support={f"c{i}": int(np.sum(y == i)) for i in range(k)},
    ), f1_a[0], f1_b[0]


def test_the_pattern_bootstrap_matches_the_row_bootstrap():
    """The simulations' shortcut against tasks.evaluate.compare on the same predictions."""
    rng = np.random.default_rng(1)
    y, (champion, challenger) = simulated_models(rng, [0.75, 0.78], DEMO_TEST_ROWS)
    labels = [f"c{i}" for i in range(N_CLASSES)]
    champ = evaluation_from_probabilities("v1 a", "a", labels, y, np.eye(N_CLASSES)[champion])
    chall = evaluation_from_probabilities("v2 b", "b", labels, y, np.eye(N_CLASSES)[challenger])
    rows = compare(chall, champ, y, seed=0)
    patterns, _, _ = pattern_comparison(rng, y, challenger, champion)
    assert patterns.macro_f1_diff == pytest.approx(rows.macro_f1_diff, abs=1e-6)
    assert np.std(patterns.diff_resamples) == pytest.approx(np.std(rows.diff_resamples), rel=0.1)
    for label in labels:
        assert np.std(patterns.class_drop_resamples[label]) == pytest.approx(
            np.std(rows.class_drop_resamples[label]), rel=0.1)
        assert np.median(patterns.class_drop_resamples[label]) == pytest.approx(
            np.median(rows.class_drop_resamples[label]), abs=0.003)


def population_class_f1(recall: np.ndarray) -> np.ndarray:
    """Per-class F1 in the limit of many balanced rows, errors spread evenly over the other classes."""
    k = len(recall)
    confusion = np.where(np.eye(k, dtype=bool), recall[:, None], ((1 - recall) / (k - 1))[:, None]) / k
    tp = np.diag(confusion)
    return 2 * tp / (confusion.sum(0) + confusion.sum(1))


def class_drop_vetoes(n: int, class_recall: float, seed: int) -> int:
    """Decisions (the whole policy) in which some class vetoed, for a challenger whose class 2
    has recall ``class_recall`` against a champion with recall 0.75 on every class."""
    rng = np.random.default_rng(seed)
    policy = PromotionPolicy(macro_f1_floor=0.0)
    recalls = np.array([0.75, 0.75, class_recall])
    vetoed = 0
    for _ in range(n):
        y = rng.permutation(np.repeat(np.arange(N_CLASSES), DEMO_CLASS_ROWS))
        champion = np.where(rng.random(len(y)) < 0.75, y, (y + rng.integers(1, N_CLASSES, len(y))) % N_CLASSES)
        right = rng.random(len(y)) < recalls[y]
        challenger = np.where(right, y, (y + rng.integers(1, N_CLASSES, len(y))) % N_CLASSES)
        cmp, f1_challenger, f1_champion = pattern_comparison(rng, y, challenger, champion)
        champ = evaluation("v1 a", list(f1_champion))
        chall = evaluation("v2 b", list(f1_challenger))
        decision = decide([Candidate(2, chall, cmp)], 1, champ, True, policy)
        vetoed += not decision.verdicts[0].rules[-1].passed
    return vetoed


def test_at_the_demo_size_a_class_dropping_twice_the_cap_is_vetoed_and_no_drop_is_not():
    """README figures: with the cap at 0.05, 2,969 test rows, 3 classes and independent errors,
    a class whose F1 truly drops by 0.10 is vetoed in at least 80% of decisions, a challenger
    whose classes do not drop at all in at most 5%."""
    cap = PromotionPolicy().max_class_regression
    baseline = population_class_f1(np.full(3, 0.75))[2]
    recall = brentq(lambda r: baseline - population_class_f1(np.array([0.75, 0.75, r]))[2] - 2 * cap, 0.3, 0.75)
    n = 150
    caught, false_vetoes = class_drop_vetoes(n, recall, seed=4), class_drop_vetoes(n, 0.75, seed=5)
    print(f"\\nclass F1 drop {2 * cap:.2f}: vetoed {caught}/{n}; no drop: vetoed {false_vetoes}/{n}")
    assert caught >= 0.8 * n and stats.binom.cdf(caught, n, 0.8) > 0.001
    assert not_above(false_vetoes, n, 0.05)


def nightly_promotions(reigns: int, challenger_recall: float, seed: int, arrives: int = 0,
                       nights: int = 365, challengers: int = 2) -> np.ndarray:
    """(reigns x nights) booleans: would the night's Holm procedure at the night's lifetime
    level promote? Each reign has one champion (recall 0.75 on every class) judged on the same
    2,969 test rows every night; each night brings freshly trained challengers (independent
    errors), the first of which has ``challenger_recall`` from night ``arrives`` on."""
    rng = np.random.default_rng(seed)
    policy = PromotionPolicy()

    def macro_f1(shape, recall):
        tp = rng.binomial(DEMO_CLASS_ROWS, recall, size=(*shape, N_CLASSES))
        to_next = rng.binomial(DEMO_CLASS_ROWS - tp, 0.5)  # errors of class j said to be j + 1
        predicted = tp + np.roll(to_next, 1, axis=-1) + np.roll(DEMO_CLASS_ROWS - tp - to_next, -1, axis=-1)
        return (2 * tp / (predicted + DEMO_CLASS_ROWS)).mean(-1)

    champion = macro_f1((reigns, 1, 1), 0.75)
    recall = np.full((1, nights, challengers, 1), 0.75)
    recall[:, arrives:, 0] = challenger_recall
    diffs = macro_f1((reigns, nights, challengers), recall) - champion
    p_values = stats.norm.sf((diffs - policy.min_delta) / DEMO_DIFF_SD)  # the bootstrap-z test
    # Holm rejects something iff its smallest p-value is at most level / challengers.
    return p_values.min(-1) <= night_levels(policy, nights) / challengers


DEMO_DIFF_SD = 0.0112  # bootstrap SD of the macro-F1 difference at the demo size (checked below)


def test_the_simulated_spread_is_the_bootstrap_spread_at_the_demo_size():
    rng = np.random.default_rng(8)
    spreads = []
    for _ in range(10):
        y, (champion, challenger) = simulated_models(rng, [0.75, 0.75], DEMO_TEST_ROWS)
        spreads.append(np.std(pattern_comparison(rng, y, challenger, champion)[0].diff_resamples))
    assert np.mean(spreads) == pytest.approx(DEMO_DIFF_SD, rel=0.05)


def test_a_year_of_equally_good_challengers_promotes_spuriously_at_most_alpha():
    """README figure: over 365 nights of one champion's reign, two equally good challengers a
    night, all judged on the same test rows: any spurious promotion in at most 5% of reigns
    (the union bound guarantees it under any dependence; the simulation checks the arithmetic).
    Without the budget (alpha every night) nearly every reign would promote one."""
    n = 2000
    promoted = nightly_promotions(n, 0.75, seed=9)
    reigns_with_one = int(promoted.any(1).sum())
    print(f"\\n365 nights of equal challengers: a spurious promotion in {reigns_with_one}/{n} reigns")
    assert not_above(reigns_with_one, n, 0.05)
    rng = np.random.default_rng(9)
    p_every_night = rng.random((200, 365, 2)).min(-1) <= PromotionPolicy().alpha / 2
    assert p_every_night.any(1).mean() > 0.99  # what the budget prevents


def test_a_challenger_003_better_is_promoted_within_a_few_nights():
    """README figures: a challenger truly +0.03 macro-F1 better (recall 0.78 vs 0.75) beside an
    equal one: promoted within 3 nights of the champion's promotion in at least 75% of reigns
    (measured 82%), and a better one that only arrives on night 100 is promoted within 30 nights
    of arriving in about a third."""
    n = 1000
    early = nightly_promotions(n, 0.78, seed=10)
    first = np.where(early.any(1), early.argmax(1) + 1, 10**6)
    late = nightly_promotions(n, 0.78, seed=11, arrives=99)
    spurious_before = late[:, :99].any(1)
    late_first = np.where(late[:, 99:].any(1), late[:, 99:].argmax(1) + 1, 10**6)
    within = {k: float(np.mean(first <= k)) for k in (1, 3, 10)}
    late_within = float(np.mean((late_first <= 30) & ~spurious_before))
    print(f"\\n+0.03 from night 1: promoted by night 1/3/10 in {within}; "
          f"arriving on night 100: within 30 nights in {late_within:.3f}")
    assert within[3] >= 0.75 and within[10] >= within[3]
    assert late_within >= 0.25


def run_levels(nights: int, runs_per_night: int) -> np.ndarray:
    """(nights x runs) levels night_budget gives each run of each date in one reign where every
    date is judged, then re-run ``runs_per_night - 1`` times with new challengers."""
    policy = PromotionPolicy()
    judged: list[JudgedNight] = []
    levels = np.zeros((nights, runs_per_night))
    for night in range(nights):
        end = END + timedelta(days=night)
        for run in range(runs_per_night):
            budget = night_budget(judged, end, policy)
            levels[night, run] = budget.level
            if not budget.rerun:  # what promotion_decisions records as spent for the date
                judged.append(JudgedNight(end, budget.night, budget.level))
    return levels


def test_rerunning_dates_with_new_challengers_cannot_buy_fresh_alpha():
    """A year of nights, each date re-run twice more with freshly trained equal challengers (two
    per run, new p-values each time): a spurious promotion in at most alpha of the reigns, as
    with one run a night. Had each re-run been tested at the date's level again (the former
    rule), the reigns would see about three times as many."""
    n, nights, runs, challengers = 2000, 365, 3, 2
    levels = run_levels(nights, runs)
    assert np.all(levels[:, 1:] == 0) and levels[:, 0].sum() == pytest.approx(PromotionPolicy().alpha)
    rng = np.random.default_rng(12)
    p_values = rng.random((n, nights, runs, challengers))  # equal challengers: uniform p-values
    promoted = (p_values.min(-1) <= levels / challengers).any((1, 2))
    former = (p_values.min(-1) <= levels[:, :1] / challengers).any((1, 2))
    print(f"\nre-runs with new challengers: spurious promotion in {promoted.mean():.3f} of reigns "
          f"(former rule: {former.mean():.3f})")
    assert not_above(int(promoted.sum()), n, 0.05)
    assert former.mean() > 2 * 0.05 * 0.9  # what the rule prevents: the bypass was real


def test_a_decision_names_the_classes_with_no_test_rows():
    """Was: 18 spam rows split 15/3/0 and the first champion promoted at the floor with no word
    that spam was never judged."""
    labels = ["ham", "spam"]
    y = np.zeros(40, dtype=int)  # no spam among the test rows
    ev = evaluation_from_probabilities("v2 tfidf", "tfidf", labels, y, np.eye(2)[y])
    decision = decide([Candidate(2, ev)], None, None, True, PromotionPolicy())
    assert decision.action == "promote"
    assert decision.summary.endswith("class(es) with no test rows, which this decision cannot judge: 'spam' "
                                     "(label more rows of them)")
    both = np.arange(40) % 2
    judged = decide([Candidate(2, evaluation_from_probabilities("v2 tfidf", "tfidf", labels, both,
                                                                np.eye(2)[both]))], None, None, True, PromotionPolicy())
    assert "no test rows" not in judged.summary
