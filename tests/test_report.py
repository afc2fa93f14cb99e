import json
import re

import numpy as np
import pytest

from support import KeywordModel
from tasks.evaluate import EvaluationReport, evaluate_all, expected_calibration_error
from tasks.report import LearningCurvePoint, learning_curve, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NASTY_LABEL = "<script>alert(1)</script>"
MATHTEXT_LABEL = "cost $a^$"  # unbalanced mathtext: matplotlib raises unless "$" is escaped


def report_rows(labels, n_rows=120, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(labels), size=n_rows)
    texts = [
        f"doc {labels[t]} {labels[rng.integers(len(labels))] if rng.random() < 0.4 else ''}" for t in truth
    ]
    return texts, [labels[t] for t in truth]


def make_report(labels, champion="champion <b>", n_rows=120, seed=0):
    """Two keyword models that read labels in opposite orders, on texts naming one or two labels.

    Texts with two labels make the models disagree, so the comparison is not trivial.
    """
    texts, true_labels = report_rows(labels, n_rows, seed)
    models = {
        "champion <b>": KeywordModel(labels, confidence=0.6),
        "tfidf/v2": KeywordModel(labels[::-1], confidence=0.9),
    }
    return evaluate_all(models, texts, true_labels, labels, champion, n_resamples=100, groups=texts)


def linked_images(page):
    return re.findall(r'<img src="([^"]+)"', page)


def test_report_writes_page_and_plots(tmp_path):
    report = make_report(["neg", "neu", "pos"])
    curve = [
        LearningCurvePoint("tfidf", 0.5, 50, 0.6, 0.2),
        LearningCurvePoint("tfidf", 1.0, 100, 0.7, 0.4),
        LearningCurvePoint("bert", 0.5, 50, 0.65, 30.0),
        LearningCurvePoint("bert", 1.0, 100, 0.8, 61.0),
    ]

    index = write_report(tmp_path / "run-1", report, "Study", learning_curve=curve, extra={"run_id": "r1"})

    assert index == tmp_path / "run-1" / "index.html"
    page = index.read_text(encoding="utf-8")
    images = linked_images(page)
    assert len([i for i in images if i.startswith("confusion_")]) == 2
    assert {"calibration.png", "learning_curve.png"} <= set(images)
    for image in images:
        assert "/" not in image  # relative links into the run directory
        assert (index.parent / image).read_bytes().startswith(PNG_SIGNATURE)
    comparison = report.comparisons[0]
    assert comparison.ci_low < comparison.ci_high
    assert f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]" in page
    distinct = len(set(report_rows(["neg", "neu", "pos"])[0]))  # the texts repeat: few distinct
    assert comparison.rows_compared == 120 and comparison.groups_compared == distinct < 120
    assert f"<td>120 ({distinct})</td>" in page  # rows compared, distinct texts resampled
    assert "Learning curve" in page and "61.0" in page
    assert "r1" in page


def test_report_json_round_trips(tmp_path):
    report = make_report(["neg", "pos"])

    index = write_report(tmp_path, report, "Study")

    saved = json.loads((index.parent / "evaluation.json").read_text(encoding="utf-8"))
    assert EvaluationReport.from_dict(saved["report"]) == report


def test_report_without_learning_curve_or_champion(tmp_path):
    report = make_report(["neg", "pos"], champion=None)

    page = write_report(tmp_path, report, "Study").read_text(encoding="utf-8")

    assert "learning_curve.png" not in page
    assert not (tmp_path / "learning_curve.png").exists()
    assert "Paired comparisons" not in page
    assert "champion: none" in page


def test_report_escapes_user_strings(tmp_path):
    report = make_report(["ok", NASTY_LABEL, MATHTEXT_LABEL])

    page = write_report(
        tmp_path, report, "<i>title</i>", extra={"note": "<img src=x onerror=alert(1)>"}
    ).read_text(encoding="utf-8")

    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "champion <b>" not in page
    assert "champion &lt;b&gt;" in page
    assert "<i>title</i>" not in page
    assert "onerror=alert(1)>" not in page
    # two confusion matrices, the calibration overview and one reliability diagram per model
    assert len(linked_images(page)) == 5


@pytest.mark.parametrize("n_labels", [2, 50])
def test_report_renders_any_number_of_classes(tmp_path, n_labels):
    labels = [f"class_{i}" for i in range(n_labels)]
    report = make_report(labels, n_rows=400)

    page = write_report(tmp_path, report, "Study").read_text(encoding="utf-8")

    for label in labels:
        assert f"<td>{label}</td>" in page
    assert len(list(tmp_path.glob("confusion_*.png"))) == 2


def test_confusion_files_stay_distinct_for_similar_names(tmp_path):
    labels = ["neg", "pos"]
    report = make_report(labels)
    report.evaluations[0].name = "a/b"
    report.evaluations[1].name = "a:b"

    page = write_report(tmp_path, report, "Study").read_text(encoding="utf-8")

    confusion_images = [i for i in linked_images(page) if i.startswith("confusion_")]
    assert len(set(confusion_images)) == 2
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", name) for name in confusion_images)


def test_learning_curve_calls_every_kind_and_fraction():
    calls = []

    def train_and_score(kind, fraction):
        calls.append((kind, fraction))
        rows = int(1000 * fraction)
        return rows, 0.5 + fraction / 4, rows / (10 if kind == "tfidf" else 0.1)

    points = learning_curve(train_and_score, ["tfidf", "bert"], fractions=(0.25, 1.0))

    assert calls == [("tfidf", 0.25), ("tfidf", 1.0), ("bert", 0.25), ("bert", 1.0)]
    assert points[1] == LearningCurvePoint("tfidf", 1.0, 1000, 0.75, 100.0)
    assert points[2] == LearningCurvePoint("bert", 0.25, 250, 0.5625, 2500.0)
    assert LearningCurvePoint.from_dict(json.loads(json.dumps(points[3].to_dict()))) == points[3]


def test_learning_curve_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fraction"):
        learning_curve(lambda kind, fraction: (1, 0.0, 0.0), ["tfidf"], fractions=(0.0, 1.0))


class CalibratedKeywordModel(KeywordModel):
    """A keyword model whose probabilities went through temperature scaling with T."""

    kind = "calibrated"

    def __init__(self, labels, confidence, temperature):
        super().__init__(labels, confidence)
        self.calibration_temperature = temperature

    def predict_proba(self, texts):
        from tasks.calibration import temperature_scaled

        return temperature_scaled(super().predict_proba(texts), self.calibration_temperature)


def test_report_shows_each_models_reliability_and_its_ece_before_and_after_calibration(tmp_path):
    labels = ["neg", "neu", "pos"]
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, size=150)
    texts = [f"doc {labels[t] if rng.random() < 0.7 else labels[rng.integers(3)]}" for t in truth]
    models = {"plain": KeywordModel(labels, 0.9), "scaled": CalibratedKeywordModel(labels, 0.9, 2.0)}
    report = evaluate_all(models, texts, [labels[t] for t in truth], labels, None, groups=texts)
    scaled = report.evaluation("scaled")
    assert scaled.ece_uncalibrated == pytest.approx(report.evaluation("plain").ece, abs=1e-12)
    # Three distinct texts ("doc neg", ...): the distinct-text ECE sees three observations,
    # each its confidence and the share of its copies predicted right.
    observations = []
    for text in sorted(set(texts)):
        probabilities = models["scaled"].predict_proba([text])[0]
        copies = [t for t, x in zip(truth, texts, strict=True) if x == text]
        observations.append((probabilities.max(), np.mean([t == probabilities.argmax() for t in copies])))
    assert scaled.ece_distinct_texts == pytest.approx(expected_calibration_error(
        np.array([c for c, _ in observations]), np.array([r for _, r in observations])), abs=1e-12)

    page = write_report(tmp_path, report, "Study").read_text(encoding="utf-8")

    per_model = [i for i in linked_images(page) if re.fullmatch(r"calibration_\d\d_.+\.png", i)]
    assert per_model == ["calibration_01_plain.png", "calibration_02_scaled.png"]
    assert all((tmp_path / i).read_bytes().startswith(PNG_SIGNATURE) for i in per_model)
    row = re.search(r"<tr><td>scaled</td>(.*?)</tr>", page.split("temperature T")[1]).group(1)
    assert re.findall(r"<td>([^<]*)</td>", row)[:5] == [
        "calibrated", "2.000", f"{scaled.ece_uncalibrated:.4f}", f"{scaled.ece:.4f}",
        f"{scaled.ece_distinct_texts:.4f}"]
    assert "not scaled" in page
