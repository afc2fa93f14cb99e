"""Settings of the ``bert`` kind: the ``[bert]`` table of textclf.toml, each field with help text
(as in transformers' run_classification.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.candidates.base import CandidateConfig

SCHEDULES = ("linear", "inverse_sqrt")
# A hub id, "name" or "org/name": what a run's trigger may name as its checkpoint (local
# directories are set in textclf.toml, not by whoever may trigger a run).
HUB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"
POOLINGS = ("auto", "cls", "mean")


@dataclass(frozen=True)
class BertConfig(CandidateConfig):
    """Fine-tuning settings (every field has help text; textclf.toml's [bert] table sets them)."""

    checkpoint: str = field(
        default="",
        metadata={"help": "Model path or hub id to start from; empty means the packaged all-MiniLM-L6-v2."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Tokens per text including [CLS]/[SEP]; longer texts are head+tail truncated."}
    )
    batch_size: int = field(
        default=32,
        metadata={"help": "Micro-batch size per device; after a CUDA out-of-memory error it is halved and "
                  "gradient accumulation doubled (the effective batch stays), and the model records both."},
    )
    epochs: float = field(default=1.0, metadata={"help": "Training epochs (fractions allowed); max_steps overrides."})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "Peak learning rate of the classification head (the LLRD base rate)."}
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay; biases and LayerNorm weights get none."}
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Fraction of the optimizer steps spent warming up linearly from 0, in [0, 1)."}
    )
    schedule: str = field(
        default="linear",
        metadata={
            "help": "'linear': linear warm-up then linear decay to 0 at the last step. 'inverse_sqrt': Noam "
            "d_model**-0.5 * min(step**-0.5, step * warmup**-1.5) normalised so its peak (at the end of "
            "warm-up) equals learning_rate, i.e. min(step / warmup, sqrt(warmup / step)).",
            "choices": SCHEDULES,
        },
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Clip the global gradient L2 norm to this value before each step; 0 disables."}
    )
    layerwise_lr_decay: float = field(
        default=0.95,
        metadata={
            "help": "LLRD factor in (0, 1]: head and pooler learn at learning_rate, encoder layer k (0-based, of L) "
            "at learning_rate * decay**(L - k), embeddings at learning_rate * decay**(L + 1). 1 disables."
        },
    )
    head_fraction: float = field(
        default=0.25,
        metadata={
            "help": "For texts longer than max_length: share of the token budget kept from the start; the rest "
            "comes from the end (0.25 of 510 gives the 128 + 382 head+tail split of Sun et al.)."
        },
    )
    early_stopping_patience: int = field(
        default=2, metadata={"help": "Stop after this many evaluations without a better validation macro-F1."}
    )
    eval_steps: int = field(
        default=200, metadata={"help": "Evaluate on the validation set every N optimizer steps (and at the end)."}
    )
    save_steps: int = field(
        default=200,
        metadata={"help": "Checkpoint every N optimizer steps (a multiple of eval_steps); reruns resume."},
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated into one optimizer step."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for the head initialisation, data order and dropout."})
    pooling: str = field(
        default="auto",
        metadata={
            "help": "How a text becomes one vector: 'cls' (the model's own classification head on [CLS]), "
            "'mean' (mean of the token vectors), or 'auto': 'mean' for sentence-transformers checkpoints "
            "trained with mean pooling (their [CLS] pooler is untrained), else 'cls'.",
            "choices": POOLINGS,
        },
    )
    max_steps: int = field(
        default=-1, metadata={"help": "If positive, the total number of optimizer steps, overriding epochs."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        # TrainingArguments reads warmup_steps >= 1 as a step count, so a ratio must stay below 1.
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule == "inverse_sqrt" and self.warmup_ratio == 0.0:
            raise ValueError("the inverse_sqrt schedule needs warmup_ratio > 0 (its time scale is the warm-up)")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}")
        if not 0.0 <= self.head_fraction <= 1.0:
            raise ValueError(f"head_fraction must be in [0, 1], got {self.head_fraction}")
        if self.save_steps % self.eval_steps != 0:
            raise ValueError("save_steps must be a multiple of eval_steps (the best checkpoint is picked on save)")
