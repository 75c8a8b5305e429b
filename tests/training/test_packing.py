"""Packing: several examples per row with no attention across them, so every example's loss is the
loss it has alone; and rows that waste little to padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forgellm.training.data import DataPosition, MicroBatches, epoch_order, load_split
from forgellm.training.packing import IGNORE_INDEX, collate_packed, collate_padded, padding_efficiency


def example_losses(logits: torch.Tensor, labels: torch.Tensor, spans: list[tuple[int, int, int]]) -> list[float]:
    """Summed next-token loss of each example: spans are (row, start, end) in the batch."""
    losses = []
    for row, start, end in spans:
        targets = labels[row, start + 1 : end]
        token_losses = torch.nn.functional.cross_entropy(
            logits[row, start : end - 1].float(), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        losses.append(float(token_losses.sum()))
    return losses


def packed_spans(rows: list[list[tuple[np.ndarray, np.ndarray]]]) -> list[tuple[int, int, int]]:
    spans = []
    for row_index, row in enumerate(rows):
        cursor = 0
        for ids, _ in row:
            spans.append((row_index, cursor, cursor + len(ids)))
            cursor += len(ids)
    return spans


@pytest.fixture
def prepared_train(tiny_train_project):
    _, prepared = tiny_train_project()
    return load_split(prepared, "train")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_and_unpacked_examples_have_the_same_loss(tiny_causal_lm_dir, prepared_train, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_causal_lm_dir), attn_implementation=attention).eval()
    rows_of_indices = epoch_order(prepared_train, seed=1, epoch=0, max_length=256)[:6]
    rows = [[prepared_train.example(int(i)) for i in row] for row in rows_of_indices]
    assert sum(len(row) for row in rows) > len(rows)  # rows really hold several examples
    packed = collate_packed(rows, pad_id=0, mask_dtype=torch.float32 if attention == "eager" else None)
    examples = [example for row in rows for example in row]
    padded = collate_padded([e[0] for e in examples], [e[1] for e in examples], pad_id=0)
    with torch.no_grad():
        packed_logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                              position_ids=packed.position_ids).logits
        padded_logits = model(input_ids=padded.input_ids, attention_mask=padded.attention_mask).logits
        leaky_logits = model(input_ids=packed.input_ids).logits  # plain causal attention across examples
    want = example_losses(padded_logits, padded.labels, [(i, 0, len(e[0])) for i, e in enumerate(examples)])
    got = example_losses(packed_logits, packed.labels, packed_spans(rows))
    targets = [max(1, int((e[1][1:] != IGNORE_INDEX).sum())) for e in examples]
    per_token = [abs(a - b) / n for a, b, n in zip(want, got, targets, strict=True)]
    assert max(per_token) < 1e-4
    assert abs(sum(want) - sum(got)) / sum(want) < 1e-5
    # Without the block mask the same tokens see the examples before them: losses differ visibly.
    leaky = example_losses(leaky_logits, packed.labels, packed_spans(rows))
    assert max(abs(a - b) for a, b in zip(want, leaky, strict=True)) > 1e-3


def test_packed_rows_restart_positions_and_never_predict_across_examples(prepared_train):
    rows = [[prepared_train.example(0), prepared_train.example(1)], [prepared_train.example(2)]]
    batch = collate_packed(rows, pad_id=7)
    first, second = len(rows[0][0][0]), len(rows[0][1][0])
    assert batch.position_ids[0, :first].tolist() == list(range(first))
    assert batch.position_ids[0, first : first + second].tolist() == list(range(second))
    assert batch.labels[0, first] == IGNORE_INDEX  # the second example's first token is no target
    mask = batch.attention_mask[0, 0]
    assert not mask[first:, :first].any()  # nothing of the second example attends to the first
    assert mask[first + 1, first] and mask[1, 0]
    width = batch.input_ids.shape[1]
    assert batch.tokens == 2 * width and batch.real_tokens == first + second + len(rows[1][0][0])
    assert (batch.input_ids[1, len(rows[1][0][0]) :] == 7).all()


def test_packing_wastes_little_on_short_examples(prepared_train):
    """Examples of 46-182 tokens in rows of 1024: packing keeps >= 95% real tokens; padding alone far less."""
    def one_epoch(packing: bool):
        stream = MicroBatches(prepared_train, seed=3, max_length=1024, micro_batch_size=4, packing=packing, pad_id=0)
        batches = []
        for batch, position in stream.stream(DataPosition()):
            batches.append(batch)
            if position.index >= len(prepared_train):
                return batches

    packed, padded = one_epoch(True), one_epoch(False)
    assert sum(b.examples for b in packed) == sum(b.examples for b in padded) == len(prepared_train)
    assert sum(b.real_tokens for b in packed) == prepared_train.tokens
    assert padding_efficiency(packed) >= 0.95
    assert padding_efficiency(padded) < padding_efficiency(packed)


@pytest.mark.parametrize("packing", [True, False])
def test_the_data_order_counts_examples_whatever_the_micro_batch(prepared_train, packing):
    def examples_seen(micro_batch_size: int, start: DataPosition, count: int) -> list[int]:
        stream = MicroBatches(prepared_train, seed=5, max_length=256, micro_batch_size=micro_batch_size,
                              packing=packing, pad_id=0)
        seen, positions = 0, []
        for batch, position in stream.stream(start):
            seen += batch.examples
            positions.append(position)
            if seen >= count:
                return positions

    by_four = examples_seen(4, DataPosition(), 400)
    by_two = examples_seen(2, DataPosition(), 400)
    # Every boundary of the 4-row stream is also one of the 2-row stream (same rows, same order) ...
    last = (by_two[-1].epoch, by_two[-1].index)
    assert {(p.epoch, p.index) for p in by_four if (p.epoch, p.index) <= last} <= {(p.epoch, p.index) for p in by_two}
    # ... and the stream resumed at a position goes on exactly like the uninterrupted one.
    middle = by_four[10]
    after_middle = [p for p in by_two if (p.epoch, p.index) > (middle.epoch, middle.index)]
    assert examples_seen(2, middle, 100)[:5] == after_middle[:5]
    assert by_four[-1].epoch >= 1  # 400 examples span more than one epoch of 175


def test_each_epoch_has_its_own_seeded_order(prepared_train):
    flat = [np.concatenate(epoch_order(prepared_train, seed=9, epoch=e, max_length=256)) for e in (0, 1)]
    again = np.concatenate(epoch_order(prepared_train, seed=9, epoch=0, max_length=256))
    assert sorted(flat[0].tolist()) == list(range(len(prepared_train)))
    assert flat[0].tolist() == again.tolist() and flat[0].tolist() != flat[1].tolist()
