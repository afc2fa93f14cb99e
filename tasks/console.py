"""Terminal output shared by the CLI and the demo."""

from __future__ import annotations

from typing import Any


def print_leaderboard(models: list[dict[str, Any]]) -> None:
    print(f"{'version':>7}  {'kind':<10} {'val macro-F1':>12}  {'created':<19}  champion")
    for m in models:
        f1 = m["metrics"].get("val_macro_f1")
        print(f"{m['version']:>7}  {m['kind']:<10} {f1 if f1 is None else f'{f1:.4f}':>12}  "
              f"{m['created_at']:%Y-%m-%d %H:%M:%S}  {'*' if m['is_champion'] else ''}")


def print_history(history: list[dict[str, Any]]) -> None:
    for h in history:
        until = h["valid_to"].strftime("%Y-%m-%d %H:%M:%S") if h["valid_to"] else "now"
        print(f"  v{h['model_version']} ({h['kind']}) {h['valid_from']:%Y-%m-%d %H:%M:%S} -> "
              f"{until}  by {h['actor']}: {h['reason']}")
