"""The TF-IDF classifier as scoring sees it: hashed word and char_wb n-gram features with a learned
idf, linear scores, temperature-scaled softmax; saved as safetensors + JSON. Training is in ``training.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

from tasks.calibration import softmax

WEIGHTS_FILE = "model.safetensors"


META_FILE = "textclf.json"


FORMAT = "hashed-tfidf-sgd-v1"  # the name is historical: any linear model (SGD or liblinear) fits it


# Artifacts of the former vocabulary TF-IDF + LinearSVC (skops) still load, for champions
# registered before it was replaced; only these types may be in such a file.
LEGACY_MODEL_FILE = "model.skops"


LEGACY_TRUSTED_TYPES = {
    "sklearn.pipeline.Pipeline",
    "sklearn.pipeline.FeatureUnion",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.svm._classes.LinearSVC",
    "builtins.dict",
    "numpy.dtype",
    "numpy.float64",
    "numpy.int64",
}


_WORD_CACHE_LIMIT = 1_000_000  # distinct words whose hashed n-grams are kept
_EVICT_FRACTION = 0.25  # share of the limit an eviction frees


class CharWbHasher:
    """Hashed char_wb n-gram counts, equal to scikit-learn's
    ``HashingVectorizer(analyzer="char_wb", alternate_sign=False, norm=None)``: n-grams of each
    lowercased, space-padded word (a word shorter than n gives its padded self once), hashed by
    the same FeatureHasher; but hashed once per distinct word and cached.

    The cache holds at most ``cache_limit`` words (besides those of the batch at hand). Real
    text keeps bringing new words (a vocabulary that grows with the rows, Heaps' law), so a
    full cache evicts a quarter of the limit by second chance (the clock algorithm): the oldest
    words not used since the last eviction go first, and the words that were used move to the
    back; the frequent words stay."""

    def __init__(self, ngram_range: tuple[int, int], n_features: int, cache_limit: int = _WORD_CACHE_LIMIT) -> None:
        self.ngram_range = ngram_range
        self.n_features = n_features
        self.cache_limit = cache_limit
        self._hasher = FeatureHasher(n_features=n_features, input_type="string", alternate_sign=False,
                                     dtype=np.float32)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # in order of insertion
        self._used: set[str] = set()  # words used since the last eviction: their second chance
        self.words_hashed = 0  # cache misses, for benchmarks and tests

    def ngrams(self, word: str) -> list[str]:
        padded = f" {word} "
        out = []
        low, high = self.ngram_range
        for n in range(low, high + 1):
            if n >= len(padded):
                out.append(padded)
                break
            out.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
        return out

    def _evict(self, batch: set[str], incoming: int) -> None:
        """Make room for ``incoming`` new words: down to (1 - _EVICT_FRACTION) x the limit,
        never evicting a word of ``batch`` (the rows being vectorised need them)."""
        excess = len(self._cache) + incoming - int(self.cache_limit * (1 - _EVICT_FRACTION))
        unused = [w for w in self._cache if w not in self._used and w not in batch]
        for word in unused[:excess]:
            del self._cache[word]
        excess -= min(excess, len(unused))
        if excess > 0:  # every word had its second chance: the oldest go
            for word in [w for w in self._cache if w not in batch][:excess]:
                del self._cache[word]
        for word in [w for w in self._cache if w in self._used]:  # second chance: to the back
            self._cache[word] = self._cache.pop(word)
        self._used = set(batch)

    def _hash_new(self, words: set[str], batch: set[str]) -> None:
        if len(self._cache) + len(words) > self.cache_limit:
            self._evict(batch, len(words))
        self.words_hashed += len(words)
        ordered = sorted(words)
        hashed = self._hasher.transform(self.ngrams(w) for w in ordered)  # one row per word
        for row, word in enumerate(ordered):
            start, end = hashed.indptr[row], hashed.indptr[row + 1]
            self._cache[word] = (hashed.indices[start:end].copy(), hashed.data[start:end].copy())

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        words = [text.lower().split() for text in texts]
        batch = {w for row in words for w in row}
        new = {w for w in batch if w not in self._cache}
        if new:
            self._hash_new(new, batch)
        self._used |= batch
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        indices: list[np.ndarray] = []
        data: list[np.ndarray] = []
        for row, row_words in enumerate(words):
            total = 0
            for word in row_words:
                word_indices, word_counts = self._cache[word]
                indices.append(word_indices)
                data.append(word_counts)
                total += len(word_indices)
            indptr[row + 1] = indptr[row] + total
        matrix = sparse.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0, dtype=np.float32),
             np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32), indptr),
            shape=(len(texts), self.n_features),
        )
        matrix.sum_duplicates()
        return matrix


@dataclass
class HashedTfidf:
    """Hashed word and char_wb n-gram counts, weighted by a learned idf."""

    word_ngram_range: tuple[int, int]
    char_ngram_range: tuple[int, int]
    word_features_log2: int
    char_features_log2: int
    idf_word: np.ndarray | None = None
    idf_char: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._word = HashingVectorizer(
            ngram_range=tuple(self.word_ngram_range), n_features=2**self.word_features_log2,
            alternate_sign=False, norm=None, strip_accents="unicode", dtype=np.float32,
        )
        self._char = CharWbHasher(tuple(self.char_ngram_range), 2**self.char_features_log2)  # type: ignore[arg-type]

    @property
    def n_features(self) -> int:
        return 2**self.word_features_log2 + 2**self.char_features_log2

    def counts(self, texts: Sequence[str]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        texts = list(texts)
        return self._word.transform(texts).tocsr(), self._char.transform(texts)

    def fit_idf(self, df_word: np.ndarray, df_char: np.ndarray, n_rows: int, min_df: int) -> None:
        def idf(df: np.ndarray) -> np.ndarray:
            values = (np.log((1 + n_rows) / (1 + df)) + 1).astype(np.float32)  # smooth_idf, as sklearn
            values[df < min_df] = 0.0
            return values

        self.idf_word, self.idf_char = idf(df_word), idf(df_char)

    def weight(self, word: sparse.csr_matrix, char: sparse.csr_matrix) -> sparse.csr_matrix:
        assert self.idf_word is not None and self.idf_char is not None, "fit_idf first"
        blocks = []
        for counts, idf in ((word, self.idf_word), (char, self.idf_char)):
            weighted = counts.copy()
            # (1 + log tf) * idf of each stored entry's column: the product with diag(idf),
            # without a sparse matrix product (which cost more than the whole rest of weighting).
            weighted.data = ((1.0 + np.log(weighted.data)) * idf[weighted.indices]).astype(np.float32)
            weighted.eliminate_zeros()  # columns under min_df (idf 0), as the product dropped them
            blocks.append(normalize(weighted, copy=False))
        return sparse.hstack(blocks, format="csr", dtype=np.float32)

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return self.weight(*self.counts(texts))

    def params(self) -> dict[str, Any]:
        return {"word_ngram_range": list(self.word_ngram_range), "char_ngram_range": list(self.char_ngram_range),
                "word_features_log2": self.word_features_log2, "char_features_log2": self.char_features_log2}


class TfidfClassifier:
    kind = "tfidf"

    def __init__(self, features: HashedTfidf, coef: np.ndarray, intercept: np.ndarray,
                 classes: Sequence[str], labels: Sequence[str], temperature: float = 1.0,
                 solver: str | None = None) -> None:
        self.features = features
        self.solver = solver  # "exact" or "sgd": how the weights were learned (None: not recorded)
        # C order: liblinear's coef_ is Fortran-ordered, and safetensors writes the raw buffer.
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)
        self.classes = list(classes)
        self.labels = list(labels)
        self.temperature = temperature

    @property
    def calibration_temperature(self) -> float:
        return self.temperature

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        scores = np.asarray(self.features.transform(texts) @ self.coef.T) + self.intercept
        return scores.ravel() if self.coef.shape[0] == 1 else scores  # binary: one margin column

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)))
        proba = softmax(self.decision_function(texts), self.temperature)
        out = np.zeros((len(texts), len(self.labels)))
        for j, label in enumerate(self.labels):
            if label in self.classes:
                out[:, j] = proba[:, self.classes.index(label)]
        return out

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        directory.mkdir(parents=True, exist_ok=True)
        assert self.features.idf_word is not None and self.features.idf_char is not None
        save_file({"coef": self.coef, "intercept": self.intercept, "idf_word": self.features.idf_word,
                   "idf_char": self.features.idf_char}, str(directory / WEIGHTS_FILE))
        (directory / META_FILE).write_text(json.dumps({
            "kind": self.kind, "format": FORMAT, "labels": self.labels, "classes": self.classes,
            "temperature": self.temperature, "features": self.features.params(), "solver": self.solver,
        }))

    @classmethod
    def load(cls, directory: Path) -> Any:
        if (directory / LEGACY_MODEL_FILE).exists():
            return LegacyTfidfClassifier.load(directory)
        from safetensors.numpy import load_file

        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory} holds a TF-IDF model of unknown format {meta.get('format')!r}")
        tensors = load_file(str(directory / WEIGHTS_FILE))
        spec = meta["features"]
        features = HashedTfidf(
            tuple(spec["word_ngram_range"]), tuple(spec["char_ngram_range"]),
            spec["word_features_log2"], spec["char_features_log2"],
            idf_word=tensors["idf_word"], idf_char=tensors["idf_char"],
        )
        return cls(features, tensors["coef"], tensors["intercept"], meta["classes"], meta["labels"],
                   meta["temperature"], meta.get("solver"))


class LegacyTfidfClassifier:
    """A model of the former vocabulary TF-IDF + LinearSVC pipeline, saved with skops."""

    kind = "tfidf"

    def __init__(self, pipeline: Any, labels: Sequence[str], temperature: float = 1.0) -> None:
        self.pipeline = pipeline
        self.labels = list(labels)
        self.temperature = temperature

    @property
    def calibration_temperature(self) -> float:
        return self.temperature

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        proba = softmax(self.pipeline.decision_function(list(texts)), self.temperature)
        classes = list(self.pipeline.classes_)
        out = np.zeros((len(texts), len(self.labels)))
        for j, label in enumerate(self.labels):
            if label in classes:
                out[:, j] = proba[:, classes.index(label)]
        return out

    @classmethod
    def load(cls, directory: Path) -> LegacyTfidfClassifier:
        import skops.io

        path = directory / LEGACY_MODEL_FILE
        untrusted = set(skops.io.get_untrusted_types(file=path)) - LEGACY_TRUSTED_TYPES
        if untrusted:
            raise ValueError(f"{path} contains types textclf does not trust: {sorted(untrusted)}")
        pipeline = skops.io.load(path, trusted=sorted(skops.io.get_untrusted_types(file=path)))
        meta = json.loads((directory / META_FILE).read_text())
        return cls(pipeline, meta["labels"], meta["temperature"])
