"""Shared pieces of the benchmarks: the result line, child processes measured alone, the scratch
database, and synthetic tweets."""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass
class Result:
    """One benchmark against its baseline, measured side by side in the same run."""

    name: str
    value: float
    unit: str
    baseline: float
    baseline_unit: str
    goal: str  # e.g. "ratio <= 2", "value <= 100 MB"
    passed: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    def line(self) -> str:
        return (f"{self.name}: {self.value:,.4g} {self.unit}, baseline {self.baseline:,.4g} "
                f"{self.baseline_unit}, ratio {self.ratio:.2f} (goal {self.goal}) "
                f"{'PASS' if self.passed else 'FAIL'}" + (f"  [{self.note}]" if self.note else ""))

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class TreePeakRss:
    """Peak resident memory of this process plus its child processes (the forked vectorising
    workers), sampled every 0.1 s in a thread; pages a fork shares count once per process, so
    this errs high."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.1):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> TreePeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, peak_rss_bytes())


def child(*args: str, timeout: float = 3600) -> dict:
    """Run ``python bench/<args>`` in a process of its own (so its peak memory is its own) and
    return the JSON object it prints last."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                         timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_results(results: list[Result], kind: str) -> Path:
    """Save a run's results as bench/results/<UTC time>-<kind>.json, with the machine."""
    from datetime import UTC, datetime

    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{kind}.json"
    quick = kind.endswith("quick")
    path.write_text(json.dumps({"machine": machine(), "quick": quick, "results": [r.to_dict() for r in results]},
                               indent=2))
    return path


def machine() -> str:
    import psutil

    return (f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")


def bench_database_url() -> str:
    """A scratch database `textclf_bench` on TEXTCLF_BENCH_SERVER, else on the server textclf
    itself would use (TEXTCLF_DATABASE_URL, else the embedded PostgreSQL)."""
    from sqlalchemy.engine import make_url

    from tasks import db
    from tasks.config import load_settings

    server = os.environ.get("TEXTCLF_BENCH_SERVER") or db.database_url(load_settings())
    db.ensure_database(server, "textclf_bench")
    url = make_url(server).set(database="textclf_bench").render_as_string(hide_password=False)
    db.upgrade(url)
    return url


def demo_rows() -> list[tuple[str, str, float]]:
    """(text, label, weight) of the labelled demo tweets."""
    from datetime import date

    from tasks.demo_data import _demo_records

    _, records = _demo_records("labelled", date(2026, 11, 28))
    rows = []
    for r in records:
        text, label = r.values["text"], r.values["label"]
        if text and text.strip() and label:
            rows.append((text, label, float(r.values["weight"] or 1.0)))
    return rows


_FILLERS = ["lol", "omg", "today", "tbh", "rn", "again", "fr", "!!", "...", "smh", "ngl", "idk"]


def synthetic_tweets(n: int, seed: int = 0) -> tuple[list[str], list[str], list[float]]:
    """``n`` distinct tweets: demo tweets with words dropped, a filler word and a tag added, each
    keeping its tweet's label and weight (the issue's 'synthetic tweet variants')."""
    rng = random.Random(seed)
    base = demo_rows()
    rng.shuffle(base)  # the corpus file is grouped by label
    texts, labels, weights = [], [], []
    for i in range(n):
        text, label, weight = base[i % len(base)]
        words = [w for w in text.split() if rng.random() > 0.1] or text.split()
        words.insert(rng.randrange(len(words) + 1), rng.choice(_FILLERS))
        texts.append(" ".join(words) + f" #t{i // len(base)}")
        labels.append(label)
        weights.append(weight)
    return texts, labels, weights


# The demo tweets' vocabulary growth, measured on their lowercased whitespace tokens in a
# seeded shuffle (`heaps_fit`): V(N) = 3.63 N^0.751 distinct words after N tokens.
DEMO_HEAPS_K = 3.63
DEMO_HEAPS_BETA = 0.751
_SYLLABLES = ["ka", "lo", "mi", "ra", "ne", "to", "shi", "va", "ber", "dan", "el", "or", "qu", "zy", "an", "tre"]


def heaps_fit(texts: list[str]) -> tuple[float, float]:
    """(K, beta) of V(N) = K N^beta: least squares on log V against log N, at 60 token counts
    spaced evenly in log from 1,000 tokens to the end."""
    import numpy as np

    marks = set(np.unique(np.geomspace(1000, 10**9, 120).astype(np.int64)).tolist())
    seen: set[str] = set()
    points, n = [], 0
    for text in texts:
        for word in text.lower().split():
            n += 1
            seen.add(word)
            if n in marks:
                points.append((n, len(seen)))
    points.append((n, len(seen)))
    tokens, distinct = np.asarray(points, dtype=float).T
    beta, log_k = np.polyfit(np.log(tokens), np.log(distinct), 1)
    return float(np.exp(log_k)), float(beta)


def _new_word(rng: random.Random, original: str) -> str:
    """A word no one wrote before: a typo of ``original`` (half the time), else a new name,
    @handle or #hashtag."""
    kind = rng.random()
    if kind < 0.5 and len(original) > 1:
        i = rng.randrange(len(original))
        letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
        op = rng.randrange(4)
        if op == 0:
            return original[:i] + letter + original[i:]  # insertion
        if op == 1:
            return original[:i] + letter + original[i + 1 :]  # substitution
        if op == 2 and i + 1 < len(original):
            return original[:i] + original[i + 1] + original[i] + original[i + 2 :]  # swap
        return original[:i] + original[i + 1 :] + original[i]  # deletion, a letter trails
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
    return rng.choice(["", "", "@", "#"]) + (name.capitalize() if rng.random() < 0.5 else name)


def realistic_tweets(n: int, seed: int = 0, reuse: float = 0.05) -> tuple[list[str], list[str], list[float]]:
    """``n`` tweets whose vocabulary keeps growing as real text does. Demo tweets (words dropped,
    as in `synthetic_tweets`) are the templates; a token is replaced by a brand-new word (a typo
    or a new name, `_new_word`) whenever the distinct words so far fall below the demo's Heaps
    curve DEMO_HEAPS_K N^DEMO_HEAPS_BETA, and with probability ``reuse`` by an earlier new word
    drawn from all their past occurrences (rich get richer: Zipf frequencies, as in Simon's
    model). Each tweet keeps its template's label and weight."""
    rng = random.Random(seed)
    base = demo_rows()
    rng.shuffle(base)
    seen: set[str] = set()
    coined: list[str] = []  # every occurrence of a new word, for the rich-get-richer draw
    tokens = 0
    texts, labels, weights = [], [], []
    for i in range(n):
        text, label, weight = base[i % len(base)]
        words = [w for w in text.split() if rng.random() > 0.1] or text.split()
        out = []
        for word in words:
            tokens += 1
            if len(seen) < DEMO_HEAPS_K * tokens**DEMO_HEAPS_BETA and word.lower() in seen:
                word = _new_word(rng, word)
                while word.lower() in seen:
                    word += rng.choice("aeiouy")
                coined.append(word)
            elif coined and rng.random() < reuse:
                word = rng.choice(coined)
                coined.append(word)
            seen.add(word.lower())
            out.append(word)
        texts.append(" ".join(out))
        labels.append(label)
        weights.append(weight)
    return texts, labels, weights
