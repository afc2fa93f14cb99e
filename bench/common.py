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


def child(*args: str, timeout: float = 3600) -> dict:
    """Run ``python bench/<args>`` in a process of its own (so its peak memory is its own) and
    return the JSON object it prints last."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                         timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
