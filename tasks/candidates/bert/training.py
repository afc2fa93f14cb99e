"""Fine-tune a BERT-style encoder for single-label text classification.

Recipe (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?", plus the usual HF defaults):
a pooled text vector -> dense -> softmax with cross-entropy, AdamW with weight decay off for biases and
LayerNorm, layer-wise learning-rate decay (LLRD), linear warm-up then linear decay (or the Noam inverse
square root), gradient clipping, head+tail truncation of long texts, early stopping on validation macro-F1
(over the whole label set) keeping the best checkpoint. The loop itself is transformers' `Trainer`; this
module supplies the data, the LLRD optimizer, the arguments and:

- the pooling the checkpoint was trained with: sentence-transformers checkpoints (the packaged MiniLM) were
  trained with mean pooling and ship an untrained [CLS] pooler, so they get a mean-pooling head;
- a length-grouped sampler whose order is a function of (seed, epoch) only, so a run resumed from a
  checkpoint sees exactly the rows an uninterrupted run would (Trainer's own draws its order from the global
  RNG before restoring the checkpoint's RNG state);
- checkpoints tied to a fingerprint of the data, the hyper-parameters and the base checkpoint: a rerun with
  other settings starts afresh instead of resuming stale weights;
- CUDA out-of-memory handling that halves the micro-batch and doubles gradient accumulation, so the
  effective batch, the warm-up and the step count stay as configured, and reports the batch really used.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported: set it first

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    EvalPrediction,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_scheduler,
    set_seed,
)
from transformers.trainer_pt_utils import get_length_grouped_indices, get_parameter_names  # noqa: E402
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402

from tasks.calibration import fit_temperature
from tasks.candidates.bert.config import BertConfig  # noqa: E402
from tasks.candidates.bert.model import (  # noqa: E402
    INFERENCE_CONFIG_NAME,
    MeanPoolingClassifier,
    checkpoint_pooling,
    encode_texts,
    resolve_checkpoint,
)
from tasks.metrics import macro_f1_score  # noqa: E402

log = logging.getLogger(__name__)


JOB_MARKER_NAME = "textclf_job.json"


# Same rule as Trainer.get_decay_parameter_names: no weight decay for biases and normalisation weights.
_NO_DECAY_NAME_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


# How encoders name their stacked layers: BERT/RoBERTa/DistilBERT "layer.N", most others "layers.N",
# GPT-2 "h.N", T5 "block.N". A model matching none of these (ALBERT shares one layer) is refused by LLRD.
_ENCODER_LAYER_INDEX = re.compile(r"\.(?:layers?|h|block)\.(\d+)\.")


@dataclass
class TrainResult:
    output_dir: Path
    train_seconds: float
    peak_memory_bytes: int  # CUDA: max allocated during training; CPU: peak RSS of the whole process so far
    global_step: int
    best_val_macro_f1: float | None
    epochs_run: float
    train_rows: int
    device: str
    batch_size: int  # the micro-batch really used (smaller than configured after an out-of-memory retry)
    gradient_accumulation_steps: int
    pooling: str
    temperature: float = 1.0  # softmax temperature fitted on the validation rows (tasks.calibration)


def build_optimizer_grouped_parameters(model: nn.Module, cfg: BertConfig) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay.

    Depth 0 is the embeddings, depth k + 1 encoder layer k (found by the `.layer.<k>.` part of the name, or
    `.layers.<k>.`, `.h.<k>.`, `.block.<k>.`), depth L + 1 everything else (pooler, classifier). A group at
    depth d gets learning_rate * decay ** (L + 1 - d): the head keeps the base rate, the top layer gets
    base * decay and the embeddings base * decay ** (L + 1). Each depth is split into a decayed and an
    undecayed group. Groups are ordered head first, so the rate Trainer logs (that of group 0) is the base
    schedule. With decay < 1 the model's L layers must all be found by name: otherwise every weight would
    silently land in the full-rate group, so the model is refused.
    """
    config: Any = model.config
    num_layers = int(config.num_hidden_layers)
    decayed = set(get_parameter_names(model, [nn.LayerNorm], _NO_DECAY_NAME_PATTERNS))

    def depth(name: str) -> int:
        layer = _ENCODER_LAYER_INDEX.search(name)
        if layer:
            return int(layer.group(1)) + 1
        return 0 if "embed" in name else num_layers + 1

    if cfg.layerwise_lr_decay < 1.0:
        found = {depth(name) - 1 for name, _ in model.named_parameters() if _ENCODER_LAYER_INDEX.search(name)}
        if found != set(range(num_layers)):
            raise ValueError(
                f"layer-wise learning-rate decay cannot find the {num_layers} encoder layers of this "
                f"{config.model_type} model by name (found layers {sorted(found)}); set layerwise_lr_decay = 1.0 "
                "to train it with one learning rate"
            )

    def group_name(d: int) -> str:
        return "embeddings" if d == 0 else "head" if d == num_layers + 1 else f"layer_{d - 1}"

    params_by_group: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            params_by_group.setdefault((depth(name), name in decayed), []).append(param)

    groups = []
    for d, with_decay in sorted(params_by_group, key=lambda key: (-key[0], not key[1])):
        groups.append(
            {
                "params": params_by_group[(d, with_decay)],
                "lr": cfg.learning_rate * cfg.layerwise_lr_decay ** (num_layers + 1 - d),
                "weight_decay": cfg.weight_decay if with_decay else 0.0,
                "group_name": group_name(d) + ("" if with_decay else "/no_decay"),
            }
        )
    return groups


def create_lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, num_warmup_steps: int, num_training_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler Trainer builds from TrainingArguments(lr_scheduler_type=schedule): exactly this call.

    transformers' inverse_sqrt multiplier is step / warmup during warm-up and 1 / sqrt((step + timescale -
    warmup) / timescale) after; its default timescale is the warm-up length, which makes it
    min(step / warmup, sqrt(warmup / step)): the Noam schedule divided by its peak value.
    """
    return get_scheduler(
        schedule, optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
    )


def _metrics_over(n_labels: int):
    """Trainer's compute_metrics: macro-F1 over the whole label set, as in test evaluation."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predictions = prediction.predictions
        logits = predictions[0] if isinstance(predictions, tuple) else predictions
        predicted = np.argmax(logits, axis=-1)
        actual = np.asarray(prediction.label_ids)
        return {"macro_f1": macro_f1_score(actual, predicted, n_labels),
                "accuracy": float(np.mean(predicted == actual))}

    return compute_metrics


class EpochSeededLengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Length-grouped order (similar lengths share a batch: less padding) drawn from a generator seeded
    with (seed, epoch) alone. Trainer calls ``set_epoch`` before each epoch, so the order of an epoch
    does not depend on what ran before it, and a resumed run replays exactly the same batches."""

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int) -> None:
        self.lengths = list(lengths)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.group_size, generator=generator))


class _Trainer(Trainer):
    def _get_train_sampler(self, train_dataset=None):
        dataset: Any = train_dataset if train_dataset is not None else self.train_dataset
        return EpochSeededLengthGroupedSampler(
            [len(example["input_ids"]) for example in dataset],
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            self.args.seed,
        )


def _new_model(checkpoint: str, pooling: str, labels: list[str]) -> nn.Module:
    label_maps = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {label: i for i, label in enumerate(labels)}}
    # Transformers 5 defaults to dtype="auto" (the checkpoint's dtype); mixed precision needs fp32 masters.
    if pooling == "mean":
        encoder = AutoModel.from_pretrained(checkpoint, dtype=torch.float32, use_safetensors=True, **label_maps)
        return MeanPoolingClassifier(encoder, len(labels))
    return AutoModelForSequenceClassification.from_pretrained(
        checkpoint, dtype=torch.float32, use_safetensors=True, **label_maps)


def _examples(token_ids: list[list[int]], label_ids: list[int]) -> list[dict]:
    return [
        {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": label}
        for ids, label in zip(token_ids, label_ids, strict=True)
    ]


def _label_ids(texts: Sequence[str], text_labels: Sequence[str], label2id: dict[str, int], split: str) -> list[int]:
    if len(texts) != len(text_labels):
        raise ValueError(f"{split}: {len(texts)} texts but {len(text_labels)} labels")
    unknown = sorted(set(text_labels) - set(label2id))
    if unknown:
        raise ValueError(f"{split} labels not in the label set: {unknown[:10]}")
    return [label2id[label] for label in text_labels]


def base_checkpoint_identity(checkpoint: str) -> dict[str, Any]:
    """What identifies the starting weights: a hub id as given, or a local directory's config and the names,
    sizes and modification times of its files."""
    directory = Path(checkpoint)
    if not directory.is_dir():
        return {"hub_id": checkpoint}
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {
        "path": str(directory.resolve()),
        "config": (directory / "config.json").read_text() if (directory / "config.json").is_file() else None,
        "files": [[p.relative_to(directory).as_posix(), p.stat().st_size, int(p.stat().st_mtime)] for p in files],
    }


def job_fingerprint(
    labels: list[str], cfg: BertConfig, checkpoint: str, *splits: tuple[Sequence[str], list[int]]
) -> str:
    """Identity of a training job: labels, data, hyper-parameters and base checkpoint. The micro-batch and
    accumulation enter only as their product (an out-of-memory retry changes the split, not the job)."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("batch_size", "gradient_accumulation_steps")}
    settings["effective_batch"] = cfg.batch_size * cfg.gradient_accumulation_steps
    digest = hashlib.sha256(json.dumps([labels, settings, base_checkpoint_identity(checkpoint)],
                                       sort_keys=True, default=str).encode())
    for texts, label_ids in splits:
        digest.update(json.dumps(len(texts)).encode())
        for text, label_id in zip(texts, label_ids, strict=True):
            digest.update(json.dumps([label_id, text]).encode())
    return digest.hexdigest()


def _reset_checkpoints(checkpoint_dir: Path, fingerprint: str, batch_size: int, accumulation: int) -> None:
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    (checkpoint_dir / JOB_MARKER_NAME).write_text(json.dumps(
        {"fingerprint": fingerprint, "batch_size": batch_size, "gradient_accumulation_steps": accumulation}))


def _last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint that was saved completely. The Trainer writes trainer_state.json
    last, so a process killed while saving leaves a folder without a readable one: that folder
    is deleted (resuming from it would fail every retry) and the one before is used."""
    while checkpoint_dir.is_dir() and (latest := get_last_checkpoint(str(checkpoint_dir))):
        try:
            json.loads((Path(latest) / "trainer_state.json").read_text())
            return latest
        except (OSError, ValueError):
            log.warning("%s was not saved completely (the process stopped while saving): deleting it",
                        latest)
            shutil.rmtree(latest)
    return None


def _resume_state(checkpoint_dir: Path, fingerprint: str, cfg: BertConfig) -> tuple[str | None, int, int]:
    """(checkpoint to resume from, micro-batch, accumulation). Checkpoints of another job (other data,
    settings or base model) are deleted: the job starts afresh rather than resume stale weights."""
    marker = checkpoint_dir / JOB_MARKER_NAME
    if marker.is_file():
        job = json.loads(marker.read_text())
        latest = _last_complete_checkpoint(checkpoint_dir)
        if job.get("fingerprint") == fingerprint:
            return latest, int(job["batch_size"]), int(job["gradient_accumulation_steps"])
        if latest:
            log.warning("%s holds checkpoints of another training job (data, settings or base model "
                        "differ): starting afresh", checkpoint_dir)
    _reset_checkpoints(checkpoint_dir, fingerprint, cfg.batch_size, cfg.gradient_accumulation_steps)
    return None, cfg.batch_size, cfg.gradient_accumulation_steps


def _training_arguments(
    cfg: BertConfig, checkpoint_dir: Path, on_cuda: bool, progress: bool, batch_size: int, accumulation: int
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.schedule,
        warmup_steps=cfg.warmup_ratio,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch_fused",
        bf16=on_cuda,
        tf32=True if on_cuda else None,
        # The sampler is EpochSeededLengthGroupedSampler (see _Trainer), whatever this says.
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,  # the best checkpoint is kept on top of this
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives a resume
        logging_strategy="steps",
        logging_steps=cfg.eval_steps,
        report_to="none",
        disable_tqdm=not progress,
        seed=cfg.seed,
        logging_nan_inf_filter=False,  # its isnan check on every step's loss is a GPU sync per step
        # Collating in worker processes overlaps it with the GPU step (+28% samples/s at batch 32 on an H100);
        # on a CPU the workers would only take cores from the model.
        dataloader_num_workers=2 if on_cuda else 0,
        dataloader_pin_memory=on_cuda,
    )


def fine_tune(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    labels: list[str],
    cfg: BertConfig,
    output_dir: Path,
    checkpoint_dir: Path,
    progress: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune cfg.checkpoint on the training rows; save the best model (by validation macro-F1) to output_dir.

    Checkpoints go to checkpoint_dir every cfg.save_steps steps; if it already holds some of the same job
    (data, labels, hyper-parameters, base checkpoint), training resumes from the latest (model, optimizer,
    scheduler, RNG and early-stopping state, step count, data order) instead of restarting. On a CUDA
    out-of-memory error the micro-batch is halved and gradient accumulation doubled, and training restarts
    from scratch with a fresh model and optimizer. `callbacks` are extra Trainer callbacks.
    """
    if not 2 <= len(labels) <= 50 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be 2..50 distinct classes, got {len(labels)} ({len(set(labels))} distinct)")
    label2id = {label: index for index, label in enumerate(labels)}
    train_label_ids = _label_ids(train_texts, train_labels, label2id, "train")
    val_label_ids = _label_ids(val_texts, val_labels, label2id, "validation")
    train_texts, val_texts = list(train_texts), list(val_texts)

    checkpoint = resolve_checkpoint(cfg.checkpoint)
    pooling = checkpoint_pooling(checkpoint) if cfg.pooling == "auto" else cfg.pooling
    output_dir, checkpoint_dir = Path(output_dir), Path(checkpoint_dir)
    fingerprint = job_fingerprint(labels, cfg, checkpoint, (train_texts, train_label_ids),
                                  (val_texts, val_label_ids))
    resume_from, batch_size, accumulation = _resume_state(checkpoint_dir, fingerprint, cfg)

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    train_dataset = _examples(encode_texts(tokenizer, train_texts, cfg.max_length, cfg.head_fraction), train_label_ids)
    val_dataset = _examples(encode_texts(tokenizer, val_texts, cfg.max_length, cfg.head_fraction), val_label_ids)
    while True:
        try:
            return _train_once(
                cfg, checkpoint, pooling, labels, tokenizer, train_dataset, val_dataset, output_dir,
                checkpoint_dir, resume_from, batch_size, accumulation, progress, callbacks,
            )
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            log.warning("out of memory at micro-batch %d x %d accumulation: retrying from scratch at %d x %d "
                        "(same effective batch, warm-up and step count)",
                        batch_size, accumulation, batch_size // 2, accumulation * 2)
            batch_size, accumulation, resume_from = batch_size // 2, accumulation * 2, None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            _reset_checkpoints(checkpoint_dir, fingerprint, batch_size, accumulation)


def _train_once(
    cfg: BertConfig,
    checkpoint: str,
    pooling: str,
    labels: list[str],
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: list[dict],
    val_dataset: list[dict],
    output_dir: Path,
    checkpoint_dir: Path,
    resume_from: str | None,
    batch_size: int,
    accumulation: int,
    progress: bool,
    callbacks: Sequence[TrainerCallback],
) -> TrainResult:
    on_cuda = torch.cuda.is_available()
    args = _training_arguments(cfg, checkpoint_dir, on_cuda, progress, batch_size, accumulation)
    set_seed(cfg.seed)  # before the model: the new classification head is randomly initialised
    model: Any = _new_model(checkpoint, pooling, labels)
    # Trainer takes a forward(**kwargs) to mean the model normalises its loss over the whole accumulated batch
    # and then skips dividing by gradient_accumulation_steps; this head's loss is a per-batch mean, so without
    # this the accumulated loss and gradients come out gradient_accumulation_steps times too large.
    model.accepts_loss_kwargs = False
    model.to(args.device)
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_cls(build_optimizer_grouped_parameters(model, cfg), **optimizer_kwargs)

    trainer = _Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if on_cuda else None),
        train_dataset=train_dataset,
        eval_dataset=val_dataset,
        processing_class=tokenizer,
        compute_metrics=_metrics_over(len(labels)),
        # The scheduler is left to Trainer: it calls create_lr_scheduler's get_scheduler with the same arguments.
        optimizers=(optimizer, None),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience), *callbacks],
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)

    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - started
    peak_memory = (
        torch.cuda.max_memory_allocated()
        if on_cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    best: Any = trainer.model  # the best checkpoint's weights (load_best_model_at_end)
    best.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    temperature = _validation_temperature(trainer, val_dataset)
    (output_dir / INFERENCE_CONFIG_NAME).write_text(json.dumps(
        {"max_length": cfg.max_length, "head_fraction": cfg.head_fraction, "pooling": pooling,
         "temperature": temperature}, indent=2))
    return TrainResult(
        output_dir=output_dir,
        train_seconds=train_seconds,
        peak_memory_bytes=int(peak_memory),
        global_step=trainer.state.global_step,
        best_val_macro_f1=trainer.state.best_metric,
        epochs_run=float(trainer.state.epoch or 0.0),
        train_rows=len(train_dataset),
        device=args.device.type,
        batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        pooling=pooling,
        temperature=temperature,
    )


def _validation_temperature(trainer: Trainer, val_dataset: list[dict]) -> float:
    """The best model's softmax temperature, fitted on its logits for the validation rows."""
    if not val_dataset:
        return 1.0
    output = trainer.predict(val_dataset)  # type: ignore[arg-type]
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return fit_temperature(np.asarray(logits, dtype=np.float64), np.asarray(output.label_ids))
