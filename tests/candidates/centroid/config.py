"""Settings of the toy ``centroid`` kind: the ``[centroid]`` table of textclf.toml."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.candidates.base import CandidateConfig


@dataclass(frozen=True)
class CentroidConfig(CandidateConfig):
    temperature: float = 0.1  # softmax temperature over cosine similarities
