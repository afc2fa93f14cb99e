"""Settings of the ``tfidf`` kind: the ``[tfidf]`` table of textclf.toml."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.candidates.base import CandidateConfig


@dataclass(frozen=True)
class TfidfConfig(CandidateConfig):
    """Features and search of the baseline (``training.py``). The search tries the grid
    (C or alpha) x weight_powers in a fixed order, at most ``max_candidates`` of them, all on one
    vectorisation, so the chosen model never depends on how busy the machine is; when the best
    regularisation sits at an edge of the grid, the grid grows past that edge (one step of the
    grid's own ratio, at most ``max_grid_extensions`` times).

    ``solver``: "exact" fits liblinear's LinearSVC on all rows in memory (the best quality);
    "sgd" learns by SGD from streamed chunks (flat memory at any size); "auto" takes "exact"
    while the training rows and their feature non-zeros fit under ``exact_max_rows`` and
    ``exact_max_nonzeros`` (about 44 bytes each while two liblinear fits run), else "sgd"."""

    solver: str = "auto"
    exact_max_rows: int = 300_000
    exact_max_nonzeros: int = 60_000_000  # about 2.6 GB while two liblinear fits hold their copies
    cs: tuple[float, ...] = (0.1, 0.3, 1.0)  # LinearSVC regularisation (exact solver)
    alphas: tuple[float, ...] = (1e-6, 1e-5, 3e-5)  # SGD regularisation strengths (like 1 / C)
    max_grid_extensions: int = 2
    # Row weights (e.g. annotator confidence) enter as weight**power; 0 ignores them. Chosen on
    # the validation split like alpha.
    weight_powers: tuple[float, ...] = (0.0, 1.0, 2.0)
    epochs: int = 3  # passes over the training rows
    # SGD only: after the first pass, only the best third of the candidates (at least 2) by
    # validation macro-F1 make the remaining passes (successive halving); false: all of them.
    successive_halving: bool = True
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
        for name in ("alphas", "cs"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                raise ValueError(f"{name} must be positive numbers, got {list(values)}")
        if self.solver not in ("auto", "exact", "sgd"):
            raise ValueError(f"solver must be 'auto', 'exact' or 'sgd', got {self.solver!r}")
        if self.max_grid_extensions < 0 or self.exact_max_rows < 0 or self.exact_max_nonzeros < 0:
            raise ValueError("max_grid_extensions, exact_max_rows and exact_max_nonzeros must be >= 0")
        for name in ("word_features_log2", "char_features_log2"):
            if not 10 <= getattr(self, name) <= 24:
                raise ValueError(f"{name} must be between 10 and 24, got {getattr(self, name)}")
        for name in ("word_ngram_range", "char_ngram_range"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 1 <= low <= high")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be 'balanced' or absent, got {self.class_weight!r}")
