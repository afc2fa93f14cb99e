"""Terminal output shared by the CLI and the demo."""

from __future__ import annotations

import re
from typing import Any, TextIO

# C0 controls but tab, newline and carriage return (progress bars), DEL and C1: what a terminal
# may act on (ESC starts colour, cursor and title sequences) rather than show.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with every terminal control character shown as its escape (``\x1b``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SafeOutput:
    """A text stream that escapes terminal control characters in everything written to it: labels,
    texts and messages come from users' tables and must not drive the reader's terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(escape_controls(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_leaderboard(models: list[dict[str, Any]]) -> None:
    """One line per version: validation macro-F1 beside the latest test macro-F1 (and the run
    that measured it on its frozen test rows), and the code version that trained it."""
    print(f"{'version':>7}  {'kind':<10} {'val macro-F1':>12} {'test macro-F1':>13}  {'created':<19}  "
          f"{'code':<20}  champion  tested in")
    for m in models:
        print(f"{m['version']:>7}  {m['kind']:<10} {_score(m['metrics'].get('val_macro_f1')):>12} "
              f"{_score(m.get('test_macro_f1')):>13}  {m['created_at']:%Y-%m-%d %H:%M:%S}  "
              f"{m.get('code_version') or '-':<20}  "
              f"{'*' if m['is_champion'] else '':<8}  {m.get('evaluated_in') or '-'}")


def print_history(history: list[dict[str, Any]]) -> None:
    for h in history:
        until = h["valid_to"].strftime("%Y-%m-%d %H:%M:%S") if h["valid_to"] else "now"
        print(f"  v{h['model_version']} ({h['kind']}) {h['valid_from']:%Y-%m-%d %H:%M:%S} -> "
              f"{until}  by {h['actor']}: {h['reason']}")
