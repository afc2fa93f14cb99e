"""How text and labels are compared: the one place that says what "blank", "the same label"
and "nearly the same label" mean. Pure functions, no dependencies."""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Iterable

# Characters that take no room on screen but are not Unicode whitespace, so str.strip() keeps
# them: zero-width space, non-joiner, joiner, word joiner, the byte-order mark, soft hyphen,
# and the invisible operators of U+2061..2064.
INVISIBLE = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"
_DROP_INVISIBLE = {ord(c): None for c in INVISIBLE}
# Blank text, one definition for validation, import and scoring: nothing but whitespace and
# characters of the categories that show nothing on their own (controls, format characters such
# as the LRM, separators, non-spacing marks), plus letters that render as nothing: the Hangul
# fillers, the halfwidth filler and the braille blank.
BLANK_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn"})
BLANK_FILLERS = "\u115f\u1160\u3164\uffa0\u2800"
# Format characters that do show: the prepended concatenation marks (Arabic number signs, the
# Syriac abbreviation mark, Kaithi and other number signs).
VISIBLE_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2"
                           "\U000110bd\U000110cd")


def _blank_character(c: str) -> bool:
    return c.isspace() or c in BLANK_FILLERS or (unicodedata.category(c) in BLANK_CATEGORIES
                                                 and c not in VISIBLE_FORMAT)


def is_blank(text: object) -> bool:
    """None, empty, or only blank characters (see BLANK_CATEGORIES)."""
    return not isinstance(text, str) or all(_blank_character(c) for c in text)


@functools.cache
def blank_pattern() -> str:
    """The same definition as a regular expression for the GX row suite (``blank_pattern``):
    every blank code point, as ranges (about 0.3 s to build, once per process)."""
    ranges: list[tuple[int, int]] = []
    start = None
    for point in range(sys.maxunicode + 2):
        blank = point <= sys.maxunicode and _blank_character(chr(point))
        if blank and start is None:
            start = point
        elif not blank and start is not None:
            ranges.append((start, point - 1))
            start = None

    def escape(point: int) -> str:
        return f"\\U{point:08x}" if point > 0xFFFF else f"\\u{point:04x}"

    return "^[" + "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges) + "]*$"


def normalize_label(label: object, case_fold: bool = True) -> str | None:
    """A label as textclf stores and compares it: Unicode NFKC, invisible characters removed,
    whitespace trimmed and collapsed, case folded unless ``case_fold`` is off. A label that is
    blank afterwards is None (the row is quarantined for a NULL label)."""
    if label is None or (isinstance(label, float) and label != label):  # None or NaN
        return None
    text = " ".join(unicodedata.normalize("NFKC", str(label)).translate(_DROP_INVISIBLE).split())
    if case_fold:
        text = text.casefold()
    return text or None


def normalize_labels(labels: Iterable[object], case_fold: bool = True) -> list[str]:
    """A list of labels normalised, blanks dropped, duplicates after normalisation merged (first
    one's place kept)."""
    return list(dict.fromkeys(n for n in (normalize_label(label, case_fold) for label in labels) if n))


def edit_distance_at_most_one(a: str, b: str) -> bool:
    """Whether one insertion, deletion or substitution turns ``a`` into ``b``."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + 1:] == b[i + 1:] if len(a) == len(b) else a[i:] == b[i + 1:]


def _differ_by_one_digit(a: str, b: str) -> bool:
    diff = [(x, y) for x, y in zip(a, b, strict=False) if x != y]
    return len(a) == len(b) and len(diff) == 1 and diff[0][0].isdigit() and diff[0][1].isdigit()


def near_duplicate_labels(labels: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of distinct labels one edit apart ("positive" / "positve"): almost always one class
    typed two ways, which normalisation cannot merge without guessing. Labels of one or two
    characters and numbered series ("topic_1" / "topic_2", "4" / "5") are not pairs."""
    ordered = sorted(set(labels))
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]
            if len(a) > 2 and len(b) > 2 and edit_distance_at_most_one(a, b)
            and not _differ_by_one_digit(a, b)]
