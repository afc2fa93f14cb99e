"""BERT batch scoring on CPU: textclf's length-sorted batches with dynamic padding against
padding every batch to max_length in arrival order; same model (the packaged MiniLM with a
mean-pooling head), same tweets, same batch size (goal: >= 2x).

    python bench/bert_scoring.py --texts 2000      # make bench
    python bench/bert_scoring.py --texts 256       # make bench-quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, demo_rows  # noqa: E402

MAX_LENGTH = 128
BATCH = 64


def run(n_texts: int) -> list[Result]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from tasks.candidates.bert.model import encode_texts, predict_model_probabilities, resolve_checkpoint
    from tasks.candidates.bert.training import _new_model

    torch.manual_seed(0)
    checkpoint = resolve_checkpoint("")
    labels = ["negative", "neutral", "positive"]
    model = _new_model(checkpoint, "mean", labels).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts = [text for text, _, _ in demo_rows()[:n_texts]]

    @torch.inference_mode()
    def padded_to_max_length() -> np.ndarray:
        encoded = encode_texts(tokenizer, texts, MAX_LENGTH, 0.25)
        out = []
        for start in range(0, len(encoded), BATCH):
            batch = tokenizer.pad({"input_ids": encoded[start:start + BATCH]}, padding="max_length",
                                  max_length=MAX_LENGTH, return_tensors="pt")
            out.append(torch.softmax(model(**batch).logits.double(), dim=-1).numpy())
        return np.concatenate(out)

    padded_to_max_length()  # warm-up (allocator, kernels), untimed
    started = time.perf_counter()
    reference = padded_to_max_length()
    baseline = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    ours = predict_model_probabilities(model, tokenizer, texts, MAX_LENGTH, 0.25, BATCH)
    value = len(texts) / (time.perf_counter() - started)
    same = bool(np.allclose(ours, reference, atol=1e-4))
    return [Result("bert_scoring_dynamic_padding", value, "texts/s", baseline, "texts/s (padded to 128)",
                   "ratio >= 2", value >= 2 * baseline and same,
                   f"{len(texts):,} tweets, batch {BATCH}, {torch.get_num_threads()} threads, "
                   f"same probabilities: {same}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    args = parser.parse_args()
    for result in run(args.texts):
        print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
