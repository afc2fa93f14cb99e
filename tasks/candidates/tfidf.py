"""Candidate kind ``tfidf``: word and character TF-IDF features, a linear SVM, temperature-scaled
probabilities; searched on the validation split, saved with skops (see ``tasks.train_tfidf``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.candidates.base import CandidateConfig, CandidateKind, TextClassifier, TrainedModel, TrainingJob


@dataclass(frozen=True)
class TfidfConfig(CandidateConfig):
    """Search space of the baseline. The search tries the grid in a fixed order and stops after
    ``max_candidates`` fits, so the chosen model never depends on how busy the machine is."""

    c_values: tuple[float, ...] = (0.1, 0.2, 0.4)  # LinearSVC inverse regularisation strengths
    word_ngram_ranges: tuple[tuple[int, int], ...] = ((1, 2),)
    char_ngram_ranges: tuple[tuple[int, int], ...] = ((2, 5),)  # char_wb n-grams
    min_df_values: tuple[int, ...] = (2,)
    class_weight: str | None = "balanced"  # 'balanced' helps macro-F1 on skewed labels
    # Row weights (e.g. annotator confidence) enter as weight**power; 0 ignores them. Chosen on
    # the validation split like C.
    weight_powers: tuple[float, ...] = (0.0, 1.0, 2.0)
    max_candidates: int = 24  # fits tried at most, in grid order
    max_iter: int = 5000
    seed: int = 42

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be at least 1, got {self.max_candidates}")
        if not self.c_values or any(c <= 0 for c in self.c_values):
            raise ValueError(f"c_values must be positive numbers, got {list(self.c_values)}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be 'balanced' or absent, got {self.class_weight!r}")


def train(job: TrainingJob, config: TfidfConfig) -> TrainedModel:
    from tasks.train_tfidf import train_tfidf

    model, result = train_tfidf(
        job.train["text"].tolist(), job.train["label"].tolist(),
        job.validation["text"].tolist(), job.validation["label"].tolist(), job.labels, config,
        train_weights=job.train["weight"].fillna(1.0).tolist(),
    )
    model.save(job.output_dir)
    return TrainedModel(
        params={**result.params, "search": asdict(config), "candidates_tried": result.candidates_tried},
        metrics={"val_macro_f1": result.val_macro_f1},
        peak_memory_bytes=None,
    )


def load(directory: Path) -> TextClassifier:
    from tasks.train_tfidf import TfidfClassifier

    return TfidfClassifier.load(directory)


KIND = CandidateKind(
    name="tfidf",
    description="TF-IDF + linear SVM baseline, tuned on the validation split.",
    config_class=TfidfConfig,
    train=train,
    load=load,
)
