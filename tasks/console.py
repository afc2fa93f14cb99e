"""Terminal output shared by the CLI and the demo."""

from __future__ import annotations

from typing import Any


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
