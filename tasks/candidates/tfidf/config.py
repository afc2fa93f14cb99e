"""Settings of the ``tfidf`` kind: the ``[tfidf]`` table of textclf.toml."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.candidates.base import CandidateConfig


@dataclass(frozen=True)
class TfidfConfig(CandidateConfig):
    """Features and search of the baseline (``training.py``). The search tries the grid
    alphas x weight_powers in a fixed order, at most ``max_candidates`` of them, all on one
    vectorisation, so the chosen model never depends on how busy the machine is."""

    alphas: tuple[float, ...] = (1e-6, 1e-5, 3e-5)  # SGD regularisation strengths (like 1 / C)
    # Row weights (e.g. annotator confidence) enter as weight**power; 0 ignores them. Chosen on
    # the validation split like alpha.
    weight_powers: tuple[float, ...] = (0.0, 1.0, 2.0)
    epochs: int = 3  # passes over the training rows
    average: bool = False  # averaged SGD (the mean of the iterates): steadier, slower to converge
    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] = (2, 5)  # char_wb n-grams
    word_features_log2: int = 19  # hashed feature columns: 2**19 words, 2**20 characters
    char_features_log2: int = 20
    min_df: int = 2  # columns seen in fewer training rows get no weight
    class_weight: str | None = "balanced"  # 'balanced' helps macro-F1 on skewed labels
    chunk_rows: int = 20_000  # rows vectorised and learned from at a time (bounds memory)
    max_candidates: int = 12
    seed: int = 42

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_candidates < 1 or self.epochs < 1 or self.chunk_rows < 1:
            raise ValueError("max_candidates, epochs and chunk_rows must be at least 1")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ValueError(f"alphas must be positive numbers, got {list(self.alphas)}")
        for name in ("word_features_log2", "char_features_log2"):
            if not 10 <= getattr(self, name) <= 24:
                raise ValueError(f"{name} must be between 10 and 24, got {getattr(self, name)}")
        for name in ("word_ngram_range", "char_ngram_range"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 1 <= low <= high")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be 'balanced' or absent, got {self.class_weight!r}")
