"""Candidate kinds: the one list of them.

Add a kind with one folder beside these (``__init__.py`` light to import with KIND, train and
load; ``config.py``; ``model.py`` for scoring; ``training.py`` for training only; see
``base.py`` for the contract) and one entry here; the configuration (``[<name>]`` table in textclf.toml), the registry, the CLI and the
DAG (one training task per kind) all read this mapping.
"""

from __future__ import annotations

from tasks.candidates import bert, pretrained, tfidf
from tasks.candidates.base import CandidateKind

KINDS: dict[str, CandidateKind] = {kind.name: kind for kind in (tfidf.KIND, bert.KIND, pretrained.KIND)}


def get_kind(name: str) -> CandidateKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown candidate kind {name!r}; known kinds: {', '.join(KINDS)}") from None


def default_candidates() -> tuple[str, ...]:
    return tuple(name for name, kind in KINDS.items() if kind.enabled_by_default)
