"""Measure, don't assume: a few real training steps of the model in fp32 and in bf16 on this CPU.

The steps are the trainer's own: the model loaded and wrapped by ``load_trainable_model`` for the
planned method and LoRA settings, a packed micro-batch of the planned shape (several examples per row,
about half of the tokens with a target, as in SFT), ``batch_loss`` under the precision's autocast,
backward and an AdamW step. Random token ids are enough: the cost of a step does not depend on which
tokens it sees. The first step of each precision warms up (allocation, kernel selection) and is not
timed. Both precisions compute the loss of the same batch, which checks that bf16 agrees with fp32.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from forgellm.config.schema import TrainingSection
from forgellm.hardware.precision import Measurement, PrecisionDecision, choose_measured

WARMUP_STEPS = 1
TIMED_STEPS = 2
EXAMPLE_TOKENS = (48, 160)  # lengths of the random examples packed into a row


def describe_shape(training: TrainingSection, seq_len: int, micro_batch: int) -> str:
    method = f"LoRA r{training.lora.r}" if training.method in ("lora", "qlora") else training.method
    return f"{method}, {micro_batch} x {seq_len} tokens"


def measure_cpu_precisions(
    model_dir: Path, training: TrainingSection, *, seq_len: int, micro_batch: int, candidates=("fp32", "bf16")
) -> PrecisionDecision:
    """Time ``TIMED_STEPS`` steps per precision in ``candidates`` and choose (hardware.precision.choose_measured)."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from forgellm.quiet import quiet_libraries

    config = AutoConfig.from_pretrained(str(model_dir))
    vocab = getattr(config, "vocab_size", None) or getattr(config.get_text_config(), "vocab_size", 1000)
    batch = _packed_batch(seq_len, micro_batch, vocab)
    hf_logging.disable_progress_bar()  # the plan's own progress line says what happens
    try:
        with quiet_libraries():
            measurements = [
                _measure(model_dir, training.model_copy(update={"precision": p}), batch, p) for p in candidates
            ]
    finally:
        hf_logging.enable_progress_bar()
    return choose_measured(measurements, describe_shape(training, seq_len, micro_batch))


def _packed_batch(seq_len: int, micro_batch: int, vocab: int):
    """Rows of random examples (ids below ``vocab``), each row filled to ``seq_len``."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(micro_batch):
        row, left = [], seq_len
        while left > 0:
            length = min(left, int(rng.integers(*EXAMPLE_TOKENS)))
            ids = rng.integers(min(100, vocab // 2), min(20_000, vocab), length)
            labels = ids.copy()
            labels[: length // 2] = -100  # the prompt half carries no loss
            row.append((ids, labels))
            left -= length
        rows.append(row)
    return rows


def _measure(model_dir: Path, training: TrainingSection, rows, precision: str) -> Measurement:
    import torch

    from forgellm.training.model import load_trainable_model
    from forgellm.training.objective import batch_loss
    from forgellm.training.packing import collate_packed

    torch.manual_seed(0)
    trainable = load_trainable_model(model_dir, training, device=torch.device("cpu"))
    batch = collate_packed(rows, 0, mask_dtype=trainable.mask_dtype())
    parameters = [p for p in trainable.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    trainable.model.train()
    seconds, first_loss = [], None
    for step in range(WARMUP_STEPS + TIMED_STEPS):
        started = time.perf_counter()
        with trainable.autocast():
            loss = batch_loss(trainable.model, batch, batch.target_tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            first_loss = float(loss.detach())  # before any update: the same weights for both precisions
        if step >= WARMUP_STEPS:
            seconds.append(time.perf_counter() - started)
    per_step = float(np.median(seconds))
    finite = first_loss is not None and np.isfinite(first_loss)
    del trainable, optimizer
    return Measurement(precision, round(batch.real_tokens / per_step, 1), round(per_step, 3),  # type: ignore[arg-type]
                       first_loss if finite else None)
