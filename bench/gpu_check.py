"""Throughput and sanity check of the BERT fine-tuning path; meant for a CUDA machine, runs on CPU too.

Fine-tunes the packaged all-MiniLM-L6-v2 (or --checkpoint) on synthetic text for a fixed number of steps, twice:
(a) through the project's path, tasks.candidates.bert.training.fine_tune (transformers Trainer: bf16 on CUDA, LLRD fused AdamW,
    clipping, length-grouped dynamic padding), timed by a callback between optimizer steps;
(b) through a bare PyTorch loop over the same model, batch and sequence length: fused AdamW, bf16 autocast on
    CUDA, gradient clipping, pre-tokenised batches already on the device.
Every synthetic text is longer than --max-length, so both paths see full-length batches of identical shape.
Prints one JSON object: samples/s of both and their ratio, device, peak memory, the loss of one batch in bf16
autocast next to fp32, and how well the saved model of (a) classifies held-out rows.

    python bench/gpu_check.py --steps 200 --batch-size 32 --max-length 128 --json-out result.json
    python bench/gpu_check.py --steps 3 --batch-size 4 --max-length 32     # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback  # noqa: E402

from tasks.candidates.bert import BertConfig  # noqa: E402
from tasks.candidates.bert.model import BertClassifier, encode_texts, resolve_checkpoint  # noqa: E402
from tasks.candidates.bert.training import fine_tune  # noqa: E402

LABELS = ["alpha", "beta", "gamma", "delta"]
CLASS_WORDS = {
    "alpha": "river mountain forest valley lake",
    "beta": "engine piston gearbox clutch brake",
    "gamma": "violin piano trumpet cello flute",
    "delta": "senate ballot election minister vote",
}
FILLER_WORDS = "the of and to in is was for on with as at by from this that which were are been".split()


def synthetic_corpus(rows: int, max_length: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts longer than max_length tokens whose class words sit at both ends (head+tail truncation keeps them)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(rows):
        label = rng.choice(LABELS)
        words = CLASS_WORDS[label].split()
        middle = rng.choices(FILLER_WORDS, k=max_length)
        texts.append(" ".join(rng.choices(words, k=4) + middle + rng.choices(words, k=4)))
        labels.append(label)
    return texts, labels


class StepTimer(TrainerCallback):
    """Wall time between the end of optimizer step `first_timed_step - 1` and the end of the last step."""

    def __init__(self, first_timed_step: int, last_step: int) -> None:
        self.first_timed_step = first_timed_step
        self.last_step = last_step
        self.started = self.finished = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.first_timed_step - 1, self.last_step):
            synchronize()
            now = time.perf_counter()
            if state.global_step == self.last_step:
                self.finished = now
            else:
                self.started = now


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def warmup_steps_for(steps: int) -> int:
    """Untimed steps (allocator, kernel selection, autotuning): a tenth of the run, at least 1, at most 10."""
    return min(10, max(1, steps // 10))


def run_trainer_path(args, checkpoint: str, workdir: Path) -> dict:
    train_texts, train_labels = synthetic_corpus(args.steps * args.batch_size, args.max_length, seed=1)
    val_texts, val_labels = synthetic_corpus(max(32, args.batch_size), args.max_length, seed=2)
    cfg = BertConfig(
        checkpoint=checkpoint,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_steps=args.steps,
        eval_steps=args.steps,  # evaluate and save once, after the timed steps
        save_steps=args.steps,
        learning_rate=1e-4,
    )
    warmup = warmup_steps_for(args.steps)
    timer = StepTimer(first_timed_step=warmup + 1, last_step=args.steps)
    reset_peak_memory()
    result = fine_tune(
        train_texts, train_labels, val_texts, val_labels, LABELS, cfg,
        output_dir=workdir / "model", checkpoint_dir=workdir / "checkpoints", callbacks=[timer],
    )
    timed_steps = args.steps - warmup
    heldout_texts, heldout_labels = synthetic_corpus(max(32, args.batch_size), args.max_length, seed=3)
    classifier = BertClassifier.load(result.output_dir)
    predicted = np.array(classifier.labels)[classifier.predict_proba(heldout_texts).argmax(axis=1)]
    return {
        "samples_per_second": timed_steps * args.batch_size / (timer.finished - timer.started),
        "timed_steps": timed_steps,
        "peak_memory_bytes": result.peak_memory_bytes,
        "global_step": result.global_step,
        "val_macro_f1": result.best_val_macro_f1,
        "heldout_accuracy": float(np.mean(predicted == np.array(heldout_labels))),
    }


def run_bare_loop(args, checkpoint: str) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_bf16 = device.type == "cuda"
    if use_bf16:
        torch.backends.fp32_precision = "tf32"  # as TrainingArguments(tf32=True) does on torch >= 2.9
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts, labels = synthetic_corpus(args.steps * args.batch_size, args.max_length, seed=1)
    input_ids = torch.tensor(encode_texts(tokenizer, texts, args.max_length, head_fraction=0.25), device=device)
    label_ids = torch.tensor([LABELS.index(label) for label in labels], device=device)
    attention_mask = torch.ones_like(input_ids)

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, num_labels=len(LABELS), dtype=torch.float32, use_safetensors=True
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)

    def batch(step: int) -> dict[str, torch.Tensor]:
        rows = slice(step * args.batch_size, (step + 1) * args.batch_size)
        return {"input_ids": input_ids[rows], "attention_mask": attention_mask[rows], "labels": label_ids[rows]}

    model.eval()
    with torch.no_grad():
        fp32_loss = model(**batch(0)).loss.item()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16_loss = model(**batch(0)).loss.item()

    model.train()
    reset_peak_memory()
    warmup = warmup_steps_for(args.steps)
    losses = []
    for step in range(args.steps):
        if step == warmup:
            synchronize()
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(**batch(step)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    synchronize()
    elapsed = time.perf_counter() - started
    return {
        "samples_per_second": (args.steps - warmup) * args.batch_size / elapsed,
        "timed_steps": args.steps - warmup,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
        "first_loss": losses[0].item(),
        "last_loss": losses[-1].item(),
        "fp32_loss_one_batch": fp32_loss,
        "bf16_loss_one_batch": bf16_loss,
    }


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="model directory or hub id; default: packaged MiniLM")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per path, warm-up included")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (one untimed warm-up step)")

    checkpoint = resolve_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        trainer_path = run_trainer_path(args, checkpoint, Path(workdir))
    bare_loop = run_bare_loop(args, checkpoint)
    bf16_loss, fp32_loss = bare_loop["bf16_loss_one_batch"], bare_loop["fp32_loss_one_batch"]
    bf16_relative_error = abs(bf16_loss - fp32_loss) / max(abs(fp32_loss), 1e-12)
    result = {
        "device": device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "checkpoint": checkpoint,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "bf16": torch.cuda.is_available(),
        "trainer_path": trainer_path,
        "bare_loop": bare_loop,
        "trainer_to_bare_ratio": trainer_path["samples_per_second"] / bare_loop["samples_per_second"],
        "bf16_loss_relative_error": bf16_relative_error,
        "bf16_loss_ok": math.isfinite(bf16_loss) and bf16_relative_error < 0.05,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
