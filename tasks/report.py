"""Static HTML study page for one evaluation run, with PNG plots beside it."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tasks.evaluate import Comparison, EvaluationReport, ModelEvaluation

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
# Above this many classes, confusion-matrix cells are too small to print counts in.
_ANNOTATE_MAX_LABELS = 20


@dataclass
class LearningCurvePoint:
    """Score and training cost of one model kind trained on a fraction of the training set."""

    kind: str
    fraction: float
    train_rows: int
    macro_f1: float
    train_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearningCurvePoint:
        return cls(**data)


def learning_curve(
    train_and_score: Callable[[str, float], tuple[int, float, float]],
    kinds: Iterable[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> list[LearningCurvePoint]:
    """Call `train_and_score(kind, fraction) -> (train_rows, macro_f1, seconds)` for every pair."""
    for fraction in fractions:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    points = []
    for kind in kinds:
        for fraction in fractions:
            train_rows, macro_f1, seconds = train_and_score(kind, fraction)
            points.append(
                LearningCurvePoint(
                    kind=kind,
                    fraction=float(fraction),
                    train_rows=int(train_rows),
                    macro_f1=float(macro_f1),
                    train_seconds=float(seconds),
                )
            )
    return points


# ---------------------------------------------------------------- plots


def _plain_text(text: str) -> str:
    """Make a user string safe for matplotlib: no mathtext, not hidden from legends."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


def _plot_confusion_matrix(evaluation: ModelEvaluation, path: Path) -> None:
    counts = np.asarray(evaluation.confusion_matrix, dtype=float)
    n_labels = len(evaluation.labels)
    row_totals = counts.sum(axis=1, keepdims=True)
    row_share = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)

    side = min(20.0, max(4.5, 0.3 * n_labels + 2.5))
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of true label")
    tick_labels = [_plain_text(label) for label in evaluation.labels]
    font_size = 8 if n_labels <= 30 else 6
    ax.set_xticks(range(n_labels), tick_labels, rotation=90, fontsize=font_size)
    ax.set_yticks(range(n_labels), tick_labels, fontsize=font_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_plain_text(f"{evaluation.name} (n={evaluation.n})"))
    if n_labels <= _ANNOTATE_MAX_LABELS:
        for (row, col), count in np.ndenumerate(counts):
            if count:
                colour = "white" if row_share[row, col] > 0.5 else "black"
                ax.text(col, row, str(int(count)), ha="center", va="center", color=colour, fontsize=7)
    _save(fig, path)


def _plot_reliability(evaluations: Sequence[ModelEvaluation], path: Path) -> None:
    fig = Figure(figsize=(6.5, 7.0), layout="constrained")
    curve_ax, count_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    curve_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for evaluation in evaluations:
        filled = [b for b in evaluation.reliability_bins if b["count"] > 0]
        label = _plain_text(f"{evaluation.name} (ECE {evaluation.ece:.3f})")
        curve_ax.plot(
            [b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o", label=label
        )
        count_ax.plot([b["confidence"] for b in filled], [b["count"] for b in filled], marker=".")
    curve_ax.set_ylabel("accuracy")
    curve_ax.set_xlim(0, 1)
    curve_ax.set_ylim(0, 1)
    curve_ax.set_title("Reliability (15 equal-width bins on max probability)")
    curve_ax.legend(loc="upper left", fontsize=8)
    count_ax.set_xlabel("mean confidence in bin")
    count_ax.set_ylabel("rows")
    count_ax.set_yscale("log")
    _save(fig, path)


def _plot_model_reliability(evaluation: ModelEvaluation, path: Path) -> None:
    """One model: its reliability curve as scored and, for a temperature-scaled model, at T = 1."""
    fig = Figure(figsize=(5.0, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    if evaluation.temperature is not None and evaluation.ece_uncalibrated is not None:
        curves = [(f"T = {evaluation.temperature:.3g} (ECE {evaluation.ece:.3f})", evaluation.reliability_bins, "o", "-"),
                  (f"T = 1, before calibration (ECE {evaluation.ece_uncalibrated:.3f})",
                   evaluation.reliability_bins_uncalibrated, "x", ":")]
    else:
        curves = [(f"as scored (ECE {evaluation.ece:.3f})", evaluation.reliability_bins, "o", "-")]
    for label, bins, marker, style in curves:
        filled = [b for b in bins if b["count"] > 0]
        ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker=marker,
                linestyle=style, label=_plain_text(label))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy")
    ax.set_title(_plain_text(f"{evaluation.name} ({evaluation.kind})"), fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def _calibration_table(evaluations: Sequence[ModelEvaluation]) -> str:
    rows = [[_e(e.name), _e(e.kind),
             _number(e.temperature, 3) if e.temperature is not None else "not scaled",
             _number(e.ece_uncalibrated),
             _number(e.ece), _number(e.ece_distinct_texts), _number(e.log_loss)]
            for e in evaluations]
    return _table(["model", "kind", "temperature T", "ECE before (T = 1)", "ECE as scored",
                   "ECE, each distinct text once", "log loss"], rows)


def _plot_learning_curve(points: Sequence[LearningCurvePoint], path: Path) -> None:
    fig = Figure(figsize=(11.0, 4.5), layout="constrained")
    score_ax, cost_ax = fig.subplots(1, 2)
    for kind in sorted({p.kind for p in points}):
        kind_points = sorted((p for p in points if p.kind == kind), key=lambda p: p.train_rows)
        rows = [p.train_rows for p in kind_points]
        score_ax.plot(rows, [p.macro_f1 for p in kind_points], marker="o", label=_plain_text(kind))
        cost_ax.plot(rows, [p.train_seconds for p in kind_points], marker="o", label=_plain_text(kind))
    score_ax.set_xlabel("training rows")
    score_ax.set_ylabel("macro-F1 (test)")
    score_ax.set_title("Score vs training-set size")
    cost_ax.set_xlabel("training rows")
    cost_ax.set_ylabel("training seconds")
    cost_ax.set_yscale("log")
    cost_ax.set_title("Training cost vs training-set size")
    for ax in (score_ax, cost_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


# ---------------------------------------------------------------- html


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def _megabytes(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e6:.1f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """HTML table; headers are escaped here, cells must already be escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _file_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "model"


def _metrics_table(report: EvaluationReport) -> str:
    comparison_of = {c.challenger: c for c in report.comparisons}
    rows = []
    for evaluation in report.evaluations:
        if evaluation.name == report.champion_name:
            role = "champion"
        else:
            role = "candidate" if report.champion_name is None else "challenger"
        difference = p_value = "—"
        comparison = comparison_of.get(evaluation.name)
        if comparison is not None:
            difference = (
                f"{comparison.macro_f1_diff:+.4f} "
                f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"
            )
            p_value = f"{comparison.mcnemar_p_value:.3g}"
        rows.append(
            [
                _e(evaluation.name),
                _e(evaluation.kind),
                role,
                str(evaluation.n),
                _number(evaluation.accuracy),
                _number(evaluation.macro_f1),
                _e(difference),
                _e(p_value),
                _number(evaluation.weighted_f1),
                _number(evaluation.log_loss),
                _number(evaluation.ece),
                _number(evaluation.latency_ms_per_1000, 1),
                _megabytes(evaluation.size_bytes),
                _number(evaluation.train_seconds, 1),
                _megabytes(evaluation.peak_memory_bytes),
            ]
        )
    confidence = report.comparisons[0].confidence if report.comparisons else 0.95
    headers = [
        "model", "kind", "role", "n", "accuracy", "macro-F1",
        f"Δ macro-F1 vs champion [{confidence:.0%} CI]", "McNemar p", "weighted-F1",
        "log loss", "ECE", "ms / 1000 docs", "size MB", "train s", "peak mem MB",
    ]  # fmt: skip
    return _table(headers, rows)


def _comparisons_table(comparisons: Sequence[Comparison]) -> str:
    headers = [
        "challenger", "champion", "Δ macro-F1", "CI low", "CI high", "resamples", "seed",
        "McNemar statistic", "McNemar p", "b (only challenger right)", "c (only champion right)",
        "rows compared (distinct texts resampled)",
    ]  # fmt: skip
    rows = [
        [
            _e(c.challenger),
            _e(c.champion),
            f"{c.macro_f1_diff:+.4f}",
            f"{c.ci_low:+.4f}",
            f"{c.ci_high:+.4f}",
            str(c.n_resamples),
            str(c.seed),
            _number(c.mcnemar_statistic, 3),
            f"{c.mcnemar_p_value:.3g}",
            str(c.b),
            str(c.c),
            "—" if c.rows_compared is None else
            f"{c.rows_compared:,}" + ("" if c.groups_compared is None else f" ({c.groups_compared:,})"),
        ]
        for c in comparisons
    ]
    return _table(headers, rows)


def _per_class_table(evaluations: Sequence[ModelEvaluation]) -> str:
    labels = evaluations[0].labels
    headers = ["label", "support"]
    for evaluation in evaluations:
        headers += [f"{evaluation.name} P", f"{evaluation.name} R", f"{evaluation.name} F1"]
    rows = []
    for label in labels:
        row = [_e(label), str(evaluations[0].per_class[label]["support"])]
        for evaluation in evaluations:
            scores = evaluation.per_class.get(label)
            if scores is None:
                row += ["—"] * 3
            else:
                row += [_number(scores["precision"], 3), _number(scores["recall"], 3), _number(scores["f1"], 3)]
        rows.append(row)
    return _table(headers, rows)


def _learning_curve_table(points: Sequence[LearningCurvePoint]) -> str:
    rows = [
        [_e(p.kind), f"{p.fraction:g}", str(p.train_rows), _number(p.macro_f1), _number(p.train_seconds, 1)]
        for p in sorted(points, key=lambda p: (p.kind, p.fraction))
    ]
    return _table(["kind", "fraction", "training rows", "macro-F1", "training seconds"], rows)


def _extra_table(extra: Mapping[str, Any]) -> str:
    rows = [
        [_e(key), _e(value if isinstance(value, str) else json.dumps(value, default=str))]
        for key, value in extra.items()
    ]
    return _table(["key", "value"], rows)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
"""


def write_report(
    out_dir: Path,
    report: EvaluationReport,
    title: str,
    learning_curve: list[LearningCurvePoint] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write index.html, its PNG plots and evaluation.json into `out_dir`; return index.html."""
    if not report.evaluations:
        raise ValueError("report has no evaluations")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = learning_curve or []

    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{report.evaluations[0].n} test rows, {len(report.evaluations[0].labels)} labels; "
        f"champion: {_e(report.champion_name) if report.champion_name else 'none'}. "
        f'Raw numbers: <a href="evaluation.json">evaluation.json</a>.</p>',
        "<h2>Metrics</h2>",
        _metrics_table(report),
        '<p class="note">Δ macro-F1 is challenger minus champion on the same test rows; '
        "the interval is a paired percentile bootstrap over test rows.</p>",
    ]
    if report.comparisons:
        sections += ["<h2>Paired comparisons</h2>", _comparisons_table(report.comparisons)]
    sections += ["<h2>Per class</h2>", _per_class_table(report.evaluations)]

    sections.append("<h2>Confusion matrices</h2>")
    for index, evaluation in enumerate(report.evaluations, start=1):
        file_name = f"confusion_{index:02d}_{_file_slug(evaluation.name)}.png"
        _plot_confusion_matrix(evaluation, out_dir / file_name)
        sections.append(
            f"<h3>{_e(evaluation.name)}</h3>"
            f'<img src="{file_name}" alt="confusion matrix of {_e(evaluation.name)}">'
        )

    _plot_reliability(report.evaluations, out_dir / "calibration.png")
    sections += [
        "<h2>Calibration</h2>",
        '<p class="note">Every kind\'s probabilities are temperature-scaled: one T per model, '
        "fitted on the validation rows (tasks.calibration). ECE: 15 equal-width bins on the top "
        "probability, on the test rows; the distinct-text ECE counts the copies of one text (one "
        "split key) once, with the share of them predicted right, so one text repeated many times "
        "with disagreeing labels does not stand for many observations.</p>",
        _calibration_table(report.evaluations),
        '<img src="calibration.png" alt="reliability diagram">',
    ]
    for index, evaluation in enumerate(report.evaluations, start=1):
        file_name = f"calibration_{index:02d}_{_file_slug(evaluation.name)}.png"
        _plot_model_reliability(evaluation, out_dir / file_name)
        sections.append(f'<img src="{file_name}" alt="reliability diagram of {_e(evaluation.name)}">')

    if points:
        _plot_learning_curve(points, out_dir / "learning_curve.png")
        sections += [
            "<h2>Learning curve</h2>",
            '<img src="learning_curve.png" alt="learning curve and training cost">',
            _learning_curve_table(points),
        ]
    if extra:
        sections += ["<h2>Run details</h2>", _extra_table(extra)]

    raw = {
        "title": title,
        "report": report.to_dict(),
        "learning_curve": [p.to_dict() for p in points],
        "extra": extra or {},
    }
    (out_dir / "evaluation.json").write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")

    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    index_path = out_dir / "index.html"
    index_path.write_text(page, encoding="utf-8")
    return index_path
