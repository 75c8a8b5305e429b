"""The loss over target positions only equals transformers' own loss, and so do its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forgellm.config.schema import TrainingSection
from forgellm.training.model import load_trainable_model
from forgellm.training.objective import batch_loss, selects_targets
from forgellm.training.packing import collate_packed, collate_padded


def _examples(seed: int, count: int, vocab: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        length = int(rng.integers(8, 40))
        ids = rng.integers(3, vocab, length)
        labels = ids.copy()
        labels[: int(rng.integers(1, length - 1))] = -100  # a prompt without loss, then the answer
        out.append((ids, labels))
    return out


def _own_loss(model, batch, items: int):
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                 labels=batch.labels, num_items_in_batch=torch.tensor(items)).loss  # fmt: skip


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("packed", [True, False])
def test_selected_loss_and_gradients_equal_the_models_own(tiny_causal_lm_dir, method, packed):
    training = TrainingSection(method=method, precision="fp32", gradient_checkpointing=False,
                               lora={"r": 4, "alpha": 8, "dropout": 0.0})  # fmt: skip
    trainable = load_trainable_model(tiny_causal_lm_dir, training, device=torch.device("cpu"))
    model = trainable.model
    assert selects_targets(model)
    vocab = model.get_input_embeddings().num_embeddings
    examples = _examples(0, 6, vocab)
    if packed:
        batch = collate_packed([examples[:3], examples[3:]], 0, mask_dtype=trainable.mask_dtype())
    else:
        batch = collate_padded([e[0] for e in examples], [e[1] for e in examples], 0)
    items = batch.target_tokens + 7  # the step's targets span other micro-batches too
    with torch.no_grad():  # LoRA's B starts at zero: give the adapters weights so their gradients matter
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    expected = _own_loss(model, batch, items)
    expected.backward()
    expected_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    got = batch_loss(model, batch, items)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    grads = _grads(model)
    assert grads.keys() == expected_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_micro_batch_without_targets_adds_nothing(tiny_causal_lm_dir):
    training = TrainingSection(method="lora", precision="fp32", gradient_checkpointing=False)
    trainable = load_trainable_model(tiny_causal_lm_dir, training, device=torch.device("cpu"))
    ids = np.arange(5, 25)
    batch = collate_padded([ids], [np.full(20, -100)], 0)
    loss = batch_loss(trainable.model, batch, 10)
    loss.backward()
    assert loss.item() == 0.0
