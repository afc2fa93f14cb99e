"""BERT fine-tuning (tasks.train_bert), the pretrained candidate (tasks.pretrained) and bench/gpu_check.py, on CPU.

Most training runs use a 2-layer cut of the packaged MiniLM to stay fast on a small CPU; the learning check uses
the packaged model itself through the default (empty) checkpoint.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from support import TOPICS, make_corpus, tiny_config
from tasks.calibration import fit_temperature, log_probabilities, negative_log_likelihood, temperature_scaled
from tasks.candidates.bert import BertConfig
from tasks.candidates.bert.model import (
    INFERENCE_CONFIG_NAME,
    BertClassifier,
    MeanPoolingClassifier,
    checkpoint_pooling,
    encode_texts,
    head_tail_truncate,
    resolve_checkpoint,
)
from tasks.candidates.bert.training import build_optimizer_grouped_parameters, create_lr_scheduler, fine_tune
from tasks.candidates.pretrained.model import PretrainedClassifier

REPO_ROOT = Path(__file__).resolve().parents[2]


def accuracy(probabilities: np.ndarray, labels: list[str], expected: list[str]) -> float:
    return float(np.mean(np.array(labels)[probabilities.argmax(axis=1)] == np.array(expected)))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """The first 2 of the packaged MiniLM's 6 layers, saved as a base model with its tokenizer."""
    directory = tmp_path_factory.mktemp("minilm_2_layers")
    packaged = resolve_checkpoint("")
    AutoModel.from_pretrained(packaged, num_hidden_layers=2).save_pretrained(directory)
    AutoTokenizer.from_pretrained(packaged).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_checkpoint(""))


# --- learning-rate schedules ---------------------------------------------------------------------------------


def multipliers(schedule: str, warmup: int, total: int) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = create_lr_scheduler(optimizer, schedule, warmup, total)
    values = []
    for _ in range(total):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_linear_schedule_warms_up_to_the_peak_then_decays_to_zero():
    values = multipliers("linear", warmup=10, total=100)
    assert values[0] == 0.0
    assert values[:11] == pytest.approx([step / 10 for step in range(11)])
    assert max(values) == pytest.approx(1.0) and int(np.argmax(values)) == 10
    assert all(later < earlier for earlier, later in itertools.pairwise(values[10:]))
    assert values[99] == pytest.approx(1 / 90)  # one step before the end of a linear decay reaching 0 at 100


def test_inverse_sqrt_schedule_is_noam_normalised_to_its_peak():
    warmup, total, d_model = 10, 100, 384

    def noam(step: int) -> float:
        return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5) if step else 0.0

    values = multipliers("inverse_sqrt", warmup=warmup, total=total)
    assert values == pytest.approx([noam(step) / noam(warmup) for step in range(total)])
    assert int(np.argmax(values)) == warmup and values[warmup] == pytest.approx(1.0)
    assert values[4 * warmup] == pytest.approx(0.5)


def test_config_rejects_a_warmup_ratio_transformers_would_read_as_steps():
    with pytest.raises(ValueError, match="warmup_ratio"):
        BertConfig(warmup_ratio=1.0)


# --- layer-wise learning-rate decay ----------------------------------------------------------------------------


def test_llrd_gives_each_depth_its_rate_and_skips_decay_for_biases_and_layernorm():
    model = AutoModelForSequenceClassification.from_pretrained(resolve_checkpoint(""), num_labels=3)
    cfg = BertConfig(learning_rate=1e-4, layerwise_lr_decay=0.8, weight_decay=0.01)
    groups = build_optimizer_grouped_parameters(model, cfg)

    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # every parameter exactly once

    rate = {group["group_name"].split("/")[0]: group["lr"] for group in groups}
    depths = ["embeddings"] + [f"layer_{k}" for k in range(6)] + ["head"]
    assert list(rate) == list(reversed(depths))  # head first: Trainer logs group 0's rate
    assert [rate[name] for name in depths] == pytest.approx([1e-4 * 0.8 ** (7 - d) for d in range(8)])
    assert all(rate[lower] < rate[upper] for lower, upper in itertools.pairwise(depths))

    names = {id(p): name for name, p in model.named_parameters()}
    for group in groups:
        group_names = [names[id(p)] for p in group["params"]]
        if group["group_name"].endswith("/no_decay"):
            assert group["weight_decay"] == 0.0
            assert all(name.endswith("bias") or "LayerNorm" in name for name in group_names)
        else:
            assert group["weight_decay"] == 0.01
            assert not any(name.endswith("bias") or "LayerNorm" in name for name in group_names)
    assert names[id(groups[0]["params"][0])].startswith(("classifier", "bert.pooler"))


# --- head+tail truncation --------------------------------------------------------------------------------------


def test_head_tail_truncation_matches_the_paper_split():
    tokens = list(range(1000))
    kept = head_tail_truncate(tokens, 510, 0.25)
    assert kept == tokens[:128] + tokens[-382:]
    assert head_tail_truncate(tokens[:20], 510, 0.25) == tokens[:20]


@given(
    length=st.integers(0, 300),
    max_tokens=st.integers(1, 120),
    head_fraction=st.floats(0.0, 1.0),
)
def test_head_tail_truncation_keeps_a_prefix_and_a_suffix(length, max_tokens, head_fraction):
    tokens = list(range(length))
    kept = head_tail_truncate(tokens, max_tokens, head_fraction)
    assert len(kept) == min(length, max_tokens)
    head = len(list(itertools.takewhile(lambda pair: pair[0] == pair[1], zip(kept, tokens, strict=False))))
    tail = kept[head:]
    assert tail == tokens[length - len(tail) :]
    if length > max_tokens:
        assert abs(head - max_tokens * head_fraction) <= 0.5 + 1e-9


def test_encoding_keeps_both_ends_of_a_long_text_inside_the_special_tokens(tokenizer):
    text = "alpha beta gamma " + " ".join(["word"] * 300) + " omega psi chi"
    (ids,) = encode_texts(tokenizer, [text], max_length=32, head_fraction=0.25)
    words = tokenizer.convert_ids_to_tokens(ids)
    assert len(ids) == 32
    assert words[0] == "[CLS]" and words[-1] == "[SEP]"
    assert words[1:4] == ["alpha", "beta", "gamma"]  # head: round(30 * 0.25) = 8 tokens
    assert words[-4:-1] == ["omega", "psi", "chi"]
    assert words[1:9].count("word") == 5 and words[9:-1].count("word") == 19
    (short,) = encode_texts(tokenizer, ["two words"], max_length=32, head_fraction=0.25)
    assert tokenizer.convert_ids_to_tokens(short) == ["[CLS]", "two", "words", "[SEP]"]


# --- the Trainer wiring: clipping, LLRD and schedule inside a real run -----------------------------------------


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.group_rates: dict[str, float] = {}
        self.step_rates: list[float] = []
        self.clipped_norms: list[float] = []
        self.logged_norms: list[float] = []
        self.steps_started_at: list[int] = []

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.group_rates = {group["group_name"]: group["initial_lr"] for group in optimizer.param_groups}

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.steps_started_at.append(state.global_step)
        self.step_rates.append(optimizer.param_groups[0]["lr"])

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        gradients = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
        self.clipped_norms.append(torch.cat(gradients).norm().item())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "grad_norm" in logs:
            self.logged_norms.append(float(logs["grad_norm"]))


@pytest.fixture(scope="module")
def instrumented_run(tiny_checkpoint, tmp_path_factory):
    texts, labels = make_corpus(["sport", "finance"], rows=48, seed=0)
    cfg = tiny_config(
        tiny_checkpoint, batch_size=8, max_steps=6, warmup_ratio=0.3, max_grad_norm=1e-3,
        learning_rate=1e-4, layerwise_lr_decay=0.5, eval_steps=1, save_steps=6, early_stopping_patience=100,
    )
    recorder = Recorder()
    workdir = tmp_path_factory.mktemp("instrumented")
    fine_tune(texts, labels, texts[:16], labels[:16], ["sport", "finance"], cfg,
              workdir / "model", workdir / "checkpoints", callbacks=[recorder])
    return cfg, recorder


def test_trainer_clips_every_step_to_max_grad_norm(instrumented_run):
    cfg, recorder = instrumented_run
    assert len(recorder.clipped_norms) == 6
    assert recorder.clipped_norms == pytest.approx([cfg.max_grad_norm] * 6, rel=1e-3)
    assert min(recorder.logged_norms) > 10 * cfg.max_grad_norm  # the norms before clipping were far larger


def test_trainer_optimizer_uses_the_llrd_groups(instrumented_run):
    _, recorder = instrumented_run
    rates = recorder.group_rates
    assert rates["head"] == pytest.approx(1e-4)
    assert rates["layer_1"] == pytest.approx(0.5e-4) and rates["layer_1/no_decay"] == pytest.approx(0.5e-4)
    assert rates["layer_0"] == pytest.approx(0.25e-4)
    assert rates["embeddings"] == pytest.approx(0.125e-4)


def test_trainer_follows_create_lr_scheduler(instrumented_run):
    cfg, recorder = instrumented_run
    warmup = math.ceil(cfg.warmup_ratio * 6)  # TrainingArguments.get_warmup_steps
    expected = [cfg.learning_rate * m for m in multipliers("linear", warmup=warmup, total=6)]
    assert recorder.step_rates == pytest.approx(expected)
    assert recorder.step_rates[0] == 0.0 and max(recorder.step_rates) == pytest.approx(cfg.learning_rate)


class LossLogger(TrainerCallback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.losses.append(logs["loss"])


def test_gradient_accumulation_averages_instead_of_summing(tiny_checkpoint, tmp_path):
    """Transformers 5 would add up the micro-batch losses of BertForSequenceClassification (see fine_tune)."""
    texts, labels = make_corpus(["sport", "finance"], rows=32, seed=10)
    first_step_loss = {}
    for batch_size, accumulation in ((16, 1), (4, 4)):
        logger = LossLogger()
        cfg = tiny_config(tiny_checkpoint, batch_size=batch_size, gradient_accumulation_steps=accumulation,
                          max_steps=1, eval_steps=1, save_steps=1, learning_rate=1e-9)
        fine_tune(texts, labels, texts[:8], labels[:8], ["sport", "finance"], cfg,
                  tmp_path / f"model_{accumulation}", tmp_path / f"checkpoints_{accumulation}", callbacks=[logger])
        first_step_loss[accumulation] = logger.losses[0]
    assert first_step_loss[1] == pytest.approx(math.log(2), rel=0.1)  # an untrained 2-class head
    assert first_step_loss[4] == pytest.approx(first_step_loss[1], rel=0.05)  # summing would give 4 times it


# --- resuming --------------------------------------------------------------------------------------------------


class CrashAt(TrainerCallback):
    """Raises at the end of optimizer step ``step``, as a worker dying mid-epoch would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"crash injected at step {self.step}")


class BatchRecorder:
    """A DataCollatorWithPadding that records every training batch's texts (token ids), in order."""

    batches: list[list[tuple[int, ...]]] = []

    def __init__(self, tokenizer, **kwargs) -> None:
        from transformers import DataCollatorWithPadding

        self.collate = DataCollatorWithPadding(tokenizer, **kwargs)

    def __call__(self, features):
        if all("labels" in f for f in features) and len(features) == 8:
            BatchRecorder.batches.append([tuple(f["input_ids"]) for f in features])
        return self.collate(features)


def test_a_resumed_run_sees_the_same_rows_and_ends_with_the_same_weights(tiny_checkpoint, tmp_path, monkeypatch):
    """3 epochs of 8 steps; a crash in epoch 2 after the step-12 checkpoint; the rerun resumes from it."""
    import tasks.candidates.bert.training as train_bert

    monkeypatch.setattr(train_bert, "DataCollatorWithPadding", BatchRecorder)
    texts, labels = make_corpus(["sport", "finance", "cooking"], rows=64, seed=21)
    # Distinct lengths, so the length grouping has something to sort.
    texts = [text + " extra" * (i % 5) for i, text in enumerate(texts)]
    cfg = tiny_config(tiny_checkpoint, batch_size=8, epochs=3.0, eval_steps=4, save_steps=4,
                      early_stopping_patience=100, learning_rate=5e-4)

    def run(name: str, callbacks=()):
        BatchRecorder.batches = []
        try:
            # 6 validation rows: evaluation batches (6 rows) are not recorded as training batches.
            result = fine_tune(texts, labels, texts[:6], labels[:6], ["sport", "finance", "cooking"], cfg,
                               tmp_path / f"model_{name}", tmp_path / f"checkpoints_{name}", callbacks=callbacks)
        except RuntimeError:
            result = None
        return result, list(BatchRecorder.batches)

    whole, whole_batches = run("whole")
    assert whole.global_step == 24 and len(whole_batches) == 24
    epochs = [sorted(b for batch in whole_batches[e * 8:(e + 1) * 8] for b in batch) for e in range(3)]
    assert epochs[0] == epochs[1] == epochs[2]  # every row once per epoch...
    assert whole_batches[:8] != whole_batches[8:16]  # ...in a new order each epoch

    crashed, crashed_batches = run("resumed", callbacks=[CrashAt(14)])
    assert crashed is None and len(crashed_batches) >= 14  # (the loader may have fetched one more)
    resumed, resumed_batches = run("resumed")
    assert resumed.global_step == 24
    assert crashed_batches[:12] + resumed_batches == whole_batches  # steps 13-24 replayed exactly

    first = load_file(whole.output_dir / "model.safetensors")
    second = load_file(resumed.output_dir / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[k], second[k], atol=1e-6) for k in first)


def test_rerun_resumes_the_same_job_and_restarts_another(tiny_checkpoint, tmp_path, caplog):
    texts, labels = make_corpus(["sport", "finance"], rows=64, seed=1)
    checkpoints = tmp_path / "checkpoints"

    def run(max_steps: int, callbacks=(), corpus=(texts, labels), **overrides) -> tuple:
        recorder = Recorder()
        cfg = tiny_config(tiny_checkpoint, batch_size=8, max_steps=max_steps, eval_steps=2, save_steps=2,
                          early_stopping_patience=100, **overrides)
        try:
            result = fine_tune(*corpus, texts[:16], labels[:16], ["sport", "finance"], cfg,
                               tmp_path / f"model_{max_steps}", checkpoints, callbacks=[recorder, *callbacks])
        except RuntimeError:
            result = None
        return result, recorder

    crashed, crashed_recorder = run(8, callbacks=[CrashAt(5)])
    assert crashed is None and crashed_recorder.steps_started_at == [0, 1, 2, 3, 4]
    assert (checkpoints / "checkpoint-4").is_dir()

    resumed, recorder = run(8)
    assert recorder.steps_started_at == [4, 5, 6, 7]  # a restart would run 8 steps from 0
    assert resumed.global_step == 8
    state = json.loads((checkpoints / "checkpoint-8" / "trainer_state.json").read_text())
    evaluated_at = [entry["step"] for entry in state["log_history"] if "eval_macro_f1" in entry]
    assert evaluated_at == [2, 4, 6, 8]  # the first run's evaluations carried over

    again, again_recorder = run(8)  # e.g. a retried task whose training had finished
    assert again_recorder.steps_started_at == [] and again.global_step == 8
    assert BertClassifier.load(again.output_dir).labels == ["sport", "finance"]

    # Another learning rate (a rerun with new Params), other data, another base model: a new job.
    for changed in ({"learning_rate": 1e-3}, {"corpus": make_corpus(["sport", "finance"], rows=64, seed=11)}):
        caplog.clear()
        fresh, fresh_recorder = run(8, **changed)
        assert fresh_recorder.steps_started_at[0] == 0 and fresh.global_step == 8
        assert "holds checkpoints of another training job" in caplog.text


KILLED_FINE_TUNE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, "tests")
from transformers import TrainerCallback
from support import make_corpus, tiny_config
from tasks.candidates.bert.training import fine_tune

class KillAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handler runs

texts, labels = make_corpus(["sport", "finance"], rows=64, seed=1)
cfg = tiny_config(sys.argv[1], batch_size=8, max_steps=8, eval_steps=2, save_steps=2, early_stopping_patience=100)
out = Path(sys.argv[2])
fine_tune(texts, labels, texts[:16], labels[:16], ["sport", "finance"], cfg, out / "model", out / "checkpoints",
          callbacks=[KillAt()])
"""


@pytest.mark.slow
def test_a_fine_tune_killed_mid_epoch_resumes_from_its_last_complete_checkpoint(tiny_checkpoint, tmp_path, caplog):
    """kill -9 at step 5 of an 8-step epoch (checkpoints every 2 steps), plus the half-written folder a kill while
    saving leaves: the retry resumes at step 4 and the step count continues to 8."""
    killed = subprocess.run([sys.executable, "-c", KILLED_FINE_TUNE, tiny_checkpoint, str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    partial = checkpoints / "checkpoint-6"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 100)  # killed before trainer_state.json

    recorder = Recorder()
    texts, labels = make_corpus(["sport", "finance"], rows=64, seed=1)
    cfg = tiny_config(tiny_checkpoint, batch_size=8, max_steps=8, eval_steps=2, save_steps=2,
                      early_stopping_patience=100)
    result = fine_tune(texts, labels, texts[:16], labels[:16], ["sport", "finance"], cfg, tmp_path / "model",
                       checkpoints, callbacks=[recorder])
    assert recorder.steps_started_at == [4, 5, 6, 7]  # continued, not restarted from 0
    assert result.global_step == 8
    assert "checkpoint-6 was not saved completely" in caplog.text
    assert BertClassifier.load(result.output_dir).labels == ["sport", "finance"]


class OutOfMemoryAt(TrainerCallback):
    """Raises CUDA's out-of-memory error on the first step of any run with a micro-batch above ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.micro_batches: list[int] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.micro_batches.append(args.per_device_train_batch_size)

    def on_step_begin(self, args, state, control, **kwargs):
        if args.per_device_train_batch_size > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(tiny_checkpoint, tmp_path):
    texts, labels = make_corpus(["sport", "finance"], rows=64, seed=3)
    cfg = tiny_config(tiny_checkpoint, batch_size=16, epochs=1.0, eval_steps=2, save_steps=2)
    oom = OutOfMemoryAt(limit=4)
    result = fine_tune(texts, labels, texts[:8], labels[:8], ["sport", "finance"], cfg,
                       tmp_path / "model", tmp_path / "checkpoints", callbacks=[oom])
    assert oom.micro_batches == [16, 8, 4]
    assert (result.batch_size, result.gradient_accumulation_steps) == (4, 4)
    assert result.global_step == 4  # 64 rows / effective batch 16, as configured
    marker = json.loads((tmp_path / "checkpoints" / "textclf_job.json").read_text())
    assert (marker["batch_size"], marker["gradient_accumulation_steps"]) == (4, 4)
    with pytest.raises(torch.OutOfMemoryError):
        fine_tune(texts, labels, texts[:8], labels[:8], ["sport", "finance"], cfg,
                  tmp_path / "model2", tmp_path / "checkpoints2", callbacks=[OutOfMemoryAt(limit=0)])


def test_llrd_refuses_a_model_whose_layers_it_cannot_find():
    from transformers import AlbertConfig, AlbertForSequenceClassification

    albert = AlbertForSequenceClassification(AlbertConfig(
        vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64))
    with pytest.raises(ValueError, match="cannot find the 4 encoder layers of this albert model"):
        build_optimizer_grouped_parameters(albert, BertConfig(layerwise_lr_decay=0.9))
    groups = build_optimizer_grouped_parameters(albert, BertConfig(layerwise_lr_decay=1.0))
    assert {g["lr"] for g in groups} == {BertConfig().learning_rate}


def test_sentence_transformers_checkpoints_keep_their_mean_pooling(tmp_path):
    packaged = resolve_checkpoint("")
    assert checkpoint_pooling(packaged) == "mean"  # its 1_Pooling/config.json
    texts, labels = make_corpus(["sport", "finance"], rows=32, seed=4)
    cfg = BertConfig(max_length=24, batch_size=16, max_steps=2, eval_steps=2, save_steps=2)
    result = fine_tune(texts, labels, texts[:8], labels[:8], ["sport", "finance"], cfg,
                       tmp_path / "model", tmp_path / "checkpoints")
    assert result.pooling == "mean"
    saved = sorted(path.name for path in result.output_dir.iterdir())
    assert {"model.safetensors", "textclf_head.safetensors"} <= set(saved)
    assert "pooler.dense.weight" not in load_file(result.output_dir / "model.safetensors")
    classifier = BertClassifier.load(result.output_dir)
    assert isinstance(classifier.model, MeanPoolingClassifier)
    # Padding does not change a text's vector: alone or batched with a much longer text.
    alone = classifier.predict_proba([texts[0]])
    batched = classifier.predict_proba([texts[0], texts[1] + " more" * 15])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)


def test_early_stopping_keeps_the_best_checkpoint(tiny_checkpoint, tmp_path):
    """Validation labels are the training labels swapped: learning can only lower validation macro-F1, so the run
    stops after `patience` evaluations without improvement and ships an earlier checkpoint than its last."""
    texts, labels = make_corpus(["sport", "finance"], rows=160, seed=8)
    swap = {"sport": "finance", "finance": "sport"}
    val_texts, val_labels = make_corpus(["sport", "finance"], rows=32, seed=9)
    cfg = tiny_config(tiny_checkpoint, batch_size=8, learning_rate=1e-3, max_steps=20, eval_steps=2, save_steps=2)
    result = fine_tune(texts, labels, val_texts, [swap[label] for label in val_labels], ["sport", "finance"], cfg,
                       tmp_path / "model", tmp_path / "checkpoints")

    last = tmp_path / "checkpoints" / f"checkpoint-{result.global_step}"
    state = json.loads((last / "trainer_state.json").read_text())
    scores = [entry["eval_macro_f1"] for entry in state["log_history"] if "eval_macro_f1" in entry]
    assert result.global_step < cfg.max_steps  # stopped early...
    assert max(scores[-cfg.early_stopping_patience :]) <= max(scores[: -cfg.early_stopping_patience])  # ...for this
    assert result.best_val_macro_f1 == max(scores)

    best = Path(state["best_model_checkpoint"])
    assert best.name != last.name
    saved = load_file(result.output_dir / "model.safetensors")
    assert all(torch.equal(saved[name], tensor) for name, tensor in load_file(best / "model.safetensors").items())
    last_weights = load_file(last / "model.safetensors")
    assert not all(torch.equal(saved[name], tensor) for name, tensor in last_weights.items())


# --- learning, many classes, saving ----------------------------------------------------------------------------


def test_packaged_minilm_learns_a_separable_corpus(tmp_path):
    topics = ["sport", "finance", "cooking"]
    texts, labels = make_corpus(topics, rows=300, seed=2)
    held_out, held_out_labels = make_corpus(topics, rows=90, seed=3)
    cfg = BertConfig(max_length=32, batch_size=16, learning_rate=2e-4, eval_steps=5, save_steps=15)
    result = fine_tune(texts[:240], labels[:240], held_out[:30], held_out_labels[:30], topics, cfg,
                       tmp_path / "model", tmp_path / "checkpoints")

    assert result.train_rows == 240 and result.global_step == 15 and result.epochs_run == pytest.approx(1.0)
    assert result.device == "cpu" and result.peak_memory_bytes > 0 and result.train_seconds > 0
    assert result.best_val_macro_f1 > 0.9
    classifier = BertClassifier.load(result.output_dir)
    assert accuracy(classifier.predict_proba(held_out[30:]), classifier.labels, held_out_labels[30:]) > 0.9


@pytest.fixture(scope="module")
def twelve_class_run(tiny_checkpoint, tmp_path_factory):
    labels = list(TOPICS)
    random.Random(4).shuffle(labels)  # column order must follow this list, not sorting
    texts, text_labels = make_corpus(labels, rows=384, seed=5, lines=3)
    held_out, held_out_labels = make_corpus(labels, rows=96, seed=6, lines=3)
    cfg = tiny_config(tiny_checkpoint, learning_rate=1e-3, max_length=48, eval_steps=8, save_steps=24)
    workdir = tmp_path_factory.mktemp("twelve")
    result = fine_tune(texts, text_labels, held_out[:48], held_out_labels[:48], labels, cfg,
                       workdir / "model", workdir / "checkpoints")
    return labels, result, held_out[48:], held_out_labels[48:]


def test_many_classes_with_multi_line_texts(twelve_class_run):
    labels, result, held_out, held_out_labels = twelve_class_run
    assert all(text.count("\n") == 2 for text in held_out)
    classifier = BertClassifier.load(result.output_dir)
    probabilities = classifier.predict_proba(held_out, batch_size=7)
    assert probabilities.shape == (len(held_out), 12)
    assert np.allclose(probabilities.sum(axis=1), 1.0) and (probabilities >= 0).all()
    assert accuracy(probabilities, classifier.labels, held_out_labels) > 0.3  # chance is 1/12
    assert classifier.predict_proba([]).shape == (0, 12)


def test_saved_model_keeps_its_label_maps_and_uses_safetensors(twelve_class_run):
    labels, result, held_out, _ = twelve_class_run
    saved = sorted(path.name for path in result.output_dir.iterdir())
    assert "model.safetensors" in saved and not any(name.endswith((".bin", ".pt", ".pth")) for name in saved)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["id2label"] == {str(index): label for index, label in enumerate(labels)}
    assert config["label2id"] == {label: index for index, label in enumerate(labels)}

    classifier = BertClassifier.load(result.output_dir)
    assert classifier.kind == "bert" and classifier.labels == labels
    reloaded = BertClassifier.load(result.output_dir)
    assert np.allclose(classifier.predict_proba(held_out[:8]), reloaded.predict_proba(held_out[:8]))


def test_saved_model_carries_the_temperature_fitted_on_its_validation_logits(twelve_class_run, tmp_path):
    labels, result, held_out, _ = twelve_class_run
    validation, validation_labels = make_corpus(labels, rows=96, seed=6, lines=3)  # as the fixture drew them
    validation, validation_labels = validation[:48], validation_labels[:48]
    inference = json.loads((result.output_dir / INFERENCE_CONFIG_NAME).read_text())
    assert inference["temperature"] == result.temperature and result.temperature != 1.0

    # A model saved before calibration (no temperature in its JSON) loads with T = 1.
    old = tmp_path / "old"
    shutil.copytree(result.output_dir, old)
    (old / INFERENCE_CONFIG_NAME).write_text(json.dumps({k: v for k, v in inference.items() if k != "temperature"}))
    uncalibrated = BertClassifier.load(old)
    assert uncalibrated.calibration_temperature == 1.0
    calibrated = BertClassifier.load(result.output_dir)
    assert calibrated.predict_proba(held_out) == pytest.approx(
        temperature_scaled(uncalibrated.predict_proba(held_out), result.temperature), abs=1e-9)

    # The stored T minimises the validation NLL of the saved model's logits.
    scores = log_probabilities(uncalibrated.predict_proba(validation))
    targets = [uncalibrated.labels.index(label) for label in validation_labels]
    grid = np.geomspace(0.05, 20, 400)
    best = grid[np.argmin([negative_log_likelihood(scores, targets, t) for t in grid])]
    assert abs(math.log(result.temperature / best)) <= math.log(grid[1] / grid[0]) + 1e-3


# --- the pretrained candidate ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """A stand-in for a downloaded fine-tuned checkpoint: labels POS / NEG / MEH, random head with a bias."""
    torch.manual_seed(7)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_checkpoint, num_labels=3, id2label={0: "POS", 1: "NEG", 2: "MEH"},
        label2id={"POS": 0, "NEG": 1, "MEH": 2},
    )
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.copy_(torch.tensor([0.5, -0.5, 1.0]))
    directory = tmp_path_factory.mktemp("sentiment")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(directory)
    return directory


def reference_probabilities(checkpoint: Path, texts: list[str]) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    batch = AutoTokenizer.from_pretrained(checkpoint)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**batch).logits.double(), dim=-1).numpy()


def test_pretrained_candidate_maps_and_renormalises_model_labels(sentiment_checkpoint, tmp_path):
    texts = ["what a great day", "this was awful", "it is a table", "the match went on"]
    model = reference_probabilities(sentiment_checkpoint, texts)  # columns POS, NEG, MEH
    labels = ["negative", "neutral", "positive"]
    candidate = PretrainedClassifier.from_checkpoint(str(sentiment_checkpoint), {"POS": "positive", "NEG": "negative"}, labels)

    probabilities = candidate.predict_proba(texts)
    kept = model[:, 0] + model[:, 1]
    assert probabilities[:, 2] == pytest.approx(model[:, 0] / kept, abs=1e-6)
    assert probabilities[:, 0] == pytest.approx(model[:, 1] / kept, abs=1e-6)
    assert (probabilities[:, 1] == 0).all()  # no model label maps to "neutral"
    assert np.allclose(probabilities.sum(axis=1), 1.0)

    candidate.save(tmp_path)
    reloaded = PretrainedClassifier.load(tmp_path)
    assert (reloaded.kind, reloaded.labels, reloaded.label_map) == ("pretrained", labels, candidate.label_map)
    assert np.allclose(reloaded.predict_proba(texts), probabilities)


def test_pretrained_candidate_is_temperature_scaled_on_validation_rows(sentiment_checkpoint, tmp_path):
    texts = [f"{word} day number {i}" for i in range(30) for word in ("great", "awful", "plain")]
    truth = ["positive", "negative", "neutral"] * 30
    labels = ["negative", "neutral", "positive"]
    candidate = PretrainedClassifier.from_checkpoint(
        str(sentiment_checkpoint), {"POS": "positive", "NEG": "negative", "MEH": "neutral"}, labels)
    before = candidate.predict_proba(texts)
    assert candidate.calibration_temperature == 1.0

    temperature = candidate.calibrate(texts, truth)

    targets = [labels.index(label) for label in truth]
    assert temperature == pytest.approx(fit_temperature(log_probabilities(before), targets))
    assert candidate.predict_proba(texts) == pytest.approx(temperature_scaled(before, temperature), abs=1e-12)
    candidate.save(tmp_path)
    assert PretrainedClassifier.load(tmp_path).calibration_temperature == temperature
    definition = json.loads((tmp_path / "pretrained_candidate.json").read_text())
    del definition["temperature"]  # a candidate saved before calibration
    (tmp_path / "pretrained_candidate.json").write_text(json.dumps(definition))
    assert PretrainedClassifier.load(tmp_path).predict_proba(texts) == pytest.approx(before, abs=1e-12)


def test_pretrained_candidate_adds_up_labels_mapped_together(sentiment_checkpoint):
    texts = ["first text", "second text"]
    model = reference_probabilities(sentiment_checkpoint, texts)
    candidate = PretrainedClassifier.from_checkpoint(
        str(sentiment_checkpoint), {"POS": "keep", "MEH": "keep", "NEG": "drop"}, ["drop", "keep"]
    )
    assert candidate.predict_proba(texts)[:, 1] == pytest.approx(model[:, 0] + model[:, 2], abs=1e-6)


def test_pretrained_candidate_without_a_label_map_matches_labels_by_name(sentiment_checkpoint):
    texts = ["first text", "second text"]
    model = reference_probabilities(sentiment_checkpoint, texts)
    candidate = PretrainedClassifier.from_checkpoint(str(sentiment_checkpoint), {}, ["NEG", "other", "POS"])
    assert candidate.label_map == {"POS": "POS", "NEG": "NEG"}
    expected = np.stack([model[:, 1], np.zeros(2), model[:, 0]], axis=1) / (model[:, :1] + model[:, 1:2])
    assert candidate.predict_proba(texts) == pytest.approx(expected, abs=1e-6)


def test_pretrained_candidate_rejects_labels_the_model_lacks(sentiment_checkpoint):
    with pytest.raises(ValueError, match="does not have"):
        PretrainedClassifier.from_checkpoint(str(sentiment_checkpoint), {"POSITIVE": "positive"}, ["negative", "positive"])
    with pytest.raises(ValueError, match="share none"):
        PretrainedClassifier.from_checkpoint(str(sentiment_checkpoint), {}, ["negative", "positive"])


# --- the GPU benchmark script ----------------------------------------------------------------------------------


def test_gpu_check_script_runs_on_cpu(tiny_checkpoint, tmp_path):
    output = tmp_path / "gpu_check.json"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gpu_check.py"), "--steps", "3", "--batch-size", "4",
         "--max-length", "32", "--checkpoint", tiny_checkpoint, "--json-out", str(output)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["trainer_path"]["global_step"] == 3
    assert result["trainer_path"]["samples_per_second"] > 0 and result["bare_loop"]["samples_per_second"] > 0
    assert result["trainer_to_bare_ratio"] > 0
    assert math.isfinite(result["bare_loop"]["last_loss"]) and result["bf16_loss_ok"]


@pytest.mark.parametrize("checkpoint", ["models/my-bert/v2", "/no/such/dir", "./bert", "acme/not-in-the-cache"])
def test_a_checkpoint_that_is_neither_a_directory_nor_a_cached_hub_id_is_a_config_error(checkpoint):
    """Was: a relative path went to the hub ("Repo id must be in the form ...") and was retried."""
    from tasks.errors import ConfigError, is_final

    with pytest.raises(ConfigError, match="BERT checkpoint") as raised:
        resolve_checkpoint(checkpoint)
    assert checkpoint in str(raised.value) and is_final(raised.value)


def test_a_relative_checkpoint_directory_is_used(tmp_path, monkeypatch):
    (tmp_path / "models" / "bert").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("models/bert") == "models/bert"
