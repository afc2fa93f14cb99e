"""Every benchmark against its baseline, one line each:

    name: value unit, baseline value unit, ratio R (goal G) PASS|FAIL

    python bench/run.py            # make bench: the sizes of the goals (1M rows, 10M predictions)
    python bench/run.py --quick    # make bench-quick: the same code at small sizes, for CI (< 3 min)

Results also go to bench/results/<UTC time>-{full,quick}.json. Exit status: 1 if a benchmark crashed; with
--enforce also if a goal that holds at the chosen size failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bert_scoring  # noqa: E402
import extract_scale  # noqa: E402
import model_load  # noqa: E402
import orchestration  # noqa: E402
import tfidf_scale  # noqa: E402
import writeback  # noqa: E402
from common import machine, write_results  # noqa: E402

FULL = {
    "tfidf": lambda: tfidf_scale.run(1_000_000, 300_000),
    "extract": lambda: extract_scale.run(1_000_000, 100_000),
    "writeback": lambda: writeback.run(10_000_000, 4, 100_000),
    "bert_scoring": lambda: bert_scoring.run(2000),
    "orchestration": lambda: orchestration.run(3),
    "model_load": lambda: model_load.run(5),
}
QUICK = {
    "tfidf": lambda: tfidf_scale.run(60_000, 18_000),
    "extract": lambda: extract_scale.run(100_000, 10_000),
    "writeback": lambda: writeback.run(400_000, 4, 20_000),
    "bert_scoring": lambda: bert_scoring.run(256),
    "orchestration": lambda: orchestration.run(1),
    "model_load": lambda: model_load.run(2),
}
# Goals that are about the code, not the size: they must hold at the quick sizes too. The
# others (time and memory at 1M rows, write-back at 10M) are judged by `make bench`.
HOLD_AT_ANY_SIZE = {"tfidf_artifact", "bert_scoring_dynamic_padding", "extract_peak_rss"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="run these benchmarks only")
    parser.add_argument("--enforce", action="store_true", help="exit 1 when a goal fails")
    args = parser.parse_args()
    suite = QUICK if args.quick else FULL
    print(f"textclf benchmarks ({'quick' if args.quick else 'full'}) on {machine()}", flush=True)
    results, crashed = [], []
    for name, bench in suite.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        try:
            for result in bench():
                print(result.line(), flush=True)
                results.append(result)
        except Exception:
            crashed.append(name)
            print(f"{name}: CRASHED\n{traceback.format_exc()}", flush=True)
        print(f"  ({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    write_results(results, "quick" if args.quick else "full")
    failed = [r.name for r in results if not r.passed and (not args.quick or r.name in HOLD_AT_ANY_SIZE)]
    if crashed or (args.enforce and failed):
        print(f"crashed: {crashed}; failed goals: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
