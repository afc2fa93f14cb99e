"""Candidate kind ``bert``: fine-tune a BERT-style encoder (``training.py``; scoring needs only ``model.py``) on the GPU
queue; on a machine without CUDA the same code runs on the CPU."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from tasks.candidates.base import CandidateKind, TextClassifier, TrainedModel, TrainingJob
from tasks.candidates.bert.config import BertConfig

__all__ = ["KIND", "BertConfig", "load", "train"]


def train(job: TrainingJob, config: BertConfig) -> TrainedModel:
    from tasks.candidates.bert.training import fine_tune

    result = fine_tune(
        job.train["text"].tolist(), job.train["label"].tolist(),
        job.validation["text"].tolist(), job.validation["label"].tolist(), job.labels, config,
        output_dir=job.output_dir, checkpoint_dir=job.checkpoint_dir, progress=job.progress,
    )
    return TrainedModel(
        # What really ran: the micro-batch after an out-of-memory retry, the pooling 'auto' chose.
        params={**asdict(config), "batch_size": result.batch_size,
                "gradient_accumulation_steps": result.gradient_accumulation_steps,
                "pooling": result.pooling},
        metrics={"val_macro_f1": result.best_val_macro_f1, "global_step": result.global_step,
                 "epochs_run": result.epochs_run, "device": result.device,
                 "train_seconds": result.train_seconds, "temperature": result.temperature},
        peak_memory_bytes=result.peak_memory_bytes,
    )


def load(directory: Path) -> TextClassifier:
    from tasks.candidates.bert.model import BertClassifier

    return BertClassifier.load(directory)


KIND = CandidateKind(
    name="bert",
    description="Fine-tune BERT; checkpoints under $TEXTCLF_HOME so a retry resumes.",
    config_class=BertConfig,
    train=train,
    load=load,
    queue="gpu",
    pool="gpu",
    needs_gpu=True,
    # Two tries of 4 hours fit the night's 20 hours with the rest of the DAG (a GPU that hangs
    # is better retried once on another worker than three times on the same one).
    execution_timeout=timedelta(hours=4),
    retries=1,
)
