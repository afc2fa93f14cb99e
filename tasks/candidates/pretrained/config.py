"""Settings of the ``pretrained`` kind: the ``[pretrained]`` table of textclf.toml."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.candidates.base import CandidateConfig


@dataclass(frozen=True)
class PretrainedConfig(CandidateConfig):
    checkpoint: str = ""  # a local directory (or a hub id where the hub is reachable)
    label_map: dict[str, str] = field(default_factory=dict)  # model label -> our label
    max_length: int = 512
