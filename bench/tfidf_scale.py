"""TF-IDF at scale: textclf's hashed-feature search at N rows (the solver it picks: SGD on
streamed chunks at 1M rows) against one fit of the former default (vocabulary TfidfVectorizer
word 1-2 + char_wb 2-5, min_df 2, LinearSVC C=0.2) at N/3.3 rows, each in a process of its own,
on realistic tweets (`common.realistic_tweets`: a vocabulary that keeps growing with the rows by
the demo's Heaps law, about 0.9M distinct words at 1M rows, so the n-gram cache must evict).

    python bench/tfidf_scale.py --rows 1000000 --baseline-rows 300000     # make bench
    python bench/tfidf_scale.py --rows 60000 --baseline-rows 18000        # make bench-quick

Goals (issue 10): training, search included, <= 2x the baseline's one fit; peak RSS <= 4 GB;
artifact <= 100 MB; scoring >= 2x the baseline's documents per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, TreePeakRss, child, realistic_tweets  # noqa: E402

from tasks.candidates.tfidf import TfidfConfig  # noqa: E402

HELD_OUT = 20_000


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_baseline(rows: int) -> dict:
    import skops.io
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    texts, labels, _ = realistic_tweets(rows + HELD_OUT)
    features = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, strip_accents="unicode")),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
    ])
    pipeline = Pipeline([("tfidf", features), ("clf", LinearSVC(C=0.2, class_weight="balanced", max_iter=5000))])
    started = time.perf_counter()
    with TreePeakRss() as memory:
        pipeline.fit(texts[:rows], labels[:rows])
    fit_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        skops.io.dump(pipeline, Path(scratch) / "model.skops")
        save_seconds = time.perf_counter() - started
        size = directory_size(Path(scratch))
    started = time.perf_counter()
    pipeline.decision_function(texts[rows:])
    scoring = HELD_OUT / (time.perf_counter() - started)
    return {"train_seconds": fit_seconds, "save_seconds": save_seconds, "artifact_bytes": size,
            "docs_per_second": scoring, "peak_rss_bytes": memory.peak}


def config_at_scale(rows: int) -> TfidfConfig:
    """The default settings, with the exact solver's row threshold scaled with the size (the
    default at 1M rows), so that the quick run takes the path the full one does: SGD."""
    return TfidfConfig(exact_max_rows=round(TfidfConfig.exact_max_rows * rows / 1_000_000))


def run_textclf(rows: int) -> dict:
    from tasks.candidates.tfidf.model import TfidfClassifier
    from tasks.candidates.tfidf.training import train_tfidf

    texts, labels, weights = realistic_tweets(rows + 2 * HELD_OUT)
    distinct_words = len({w for text in texts[:rows] for w in text.lower().split()})
    val = slice(rows, rows + HELD_OUT)
    started = time.perf_counter()
    with TreePeakRss() as memory:
        model, result = train_tfidf(texts[:rows], labels[:rows], texts[val], labels[val], sorted(set(labels)),
                                    config_at_scale(rows), train_weights=weights[:rows])
    train_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        model.save(Path(scratch))
        save_seconds = time.perf_counter() - started
        size = directory_size(Path(scratch))
        loaded = TfidfClassifier.load(Path(scratch))  # scoring starts cold, as a fresh task does
    held_out = texts[rows + HELD_OUT:]
    started = time.perf_counter()
    loaded.predict_proba(held_out)
    scoring = HELD_OUT / (time.perf_counter() - started)
    return {"train_seconds": train_seconds, "save_seconds": save_seconds, "artifact_bytes": size,
            "docs_per_second": scoring, "peak_rss_bytes": memory.peak,
            "val_macro_f1": result.val_macro_f1, "candidates": result.candidates_tried,
            "solver": result.params["solver"], "distinct_words": distinct_words}


def run(rows: int, baseline_rows: int) -> list[Result]:
    base = child("bench/tfidf_scale.py", "--role", "baseline", "--rows", str(baseline_rows))
    ours = child("bench/tfidf_scale.py", "--role", "textclf", "--rows", str(rows))
    scale = (f"{rows:,} rows ({ours['distinct_words']:,} distinct words) vs one baseline fit at "
             f"{baseline_rows:,}; solver {ours['solver']}, validation macro-F1 {ours['val_macro_f1']:.4f}")
    return [
        Result("tfidf_train_search", ours["train_seconds"], f"s ({ours['candidates']} candidates)",
               base["train_seconds"], "s", "ratio <= 2", ours["train_seconds"] <= 2 * base["train_seconds"], scale),
        Result("tfidf_peak_rss", ours["peak_rss_bytes"] / 2**30, "GB", base["peak_rss_bytes"] / 2**30, "GB",
               "value <= 4 GB", ours["peak_rss_bytes"] <= 4 * 2**30,
               scale + "; RSS of the process and its vectorising workers, summed"),
        Result("tfidf_artifact", ours["artifact_bytes"] / 2**20, "MB", base["artifact_bytes"] / 2**20, "MB",
               "value <= 100 MB", ours["artifact_bytes"] <= 100 * 2**20,
               f"save {ours['save_seconds']:.1f} s vs {base['save_seconds']:.1f} s"),
        Result("tfidf_scoring", ours["docs_per_second"], "docs/s", base["docs_per_second"], "docs/s",
               "ratio >= 2", ours["docs_per_second"] >= 2 * base["docs_per_second"],
               f"{HELD_OUT:,} held-out texts, one process, model freshly loaded"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=300_000)
    parser.add_argument("--role", choices=["baseline", "textclf"])
    args = parser.parse_args()
    if args.role:
        runner = run_baseline if args.role == "baseline" else run_textclf
        print(json.dumps(runner(args.rows)))
        return 0
    for result in run(args.rows, args.baseline_rows):
        print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
