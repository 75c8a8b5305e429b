"""The training loss of a micro-batch, computed where it is needed only.

A causal LM's head turns every position's hidden state into logits over the whole vocabulary (49k
entries for SmolLM2, 150k for Qwen) and the loss then keeps the positions that have a target. In
SFT only the assistant's tokens have one, so most of that work is thrown away: for SmolLM2-135M the
head is a fifth of the model's weights and its fp32 logits the largest tensor of the step. Here the
decoder runs as usual, and the head and the cross-entropy see only the hidden states of positions
with a target (packed rows included), which gives exactly the loss transformers computes — the mean
over ``num_items`` target tokens — at a fraction of the cost (benchmarks/train_bench.py).

Models whose head does more than a linear layer are covered when the extra step is known (Gemma-2's
final logit soft-capping); anything else takes the model's own loss.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100
# transformers model types whose causal-LM head is `lm_head(hidden)` (+ optional soft-capping) over
# `model.get_decoder()`'s last hidden state.
SELECTED_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text"})


def _causal_lm(model: Any) -> Any:
    """The transformers CausalLM inside a peft wrapper (LoRA layers are injected in place), or the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def forward_module(model: Any) -> Any:
    """The module every training forward runs through, whichever loss path is taken: the decoder when
    the model has one (``batch_loss`` calls it directly), else the model. Hooks that must see each
    forward (the injected faults) go here."""
    lm = _causal_lm(model)
    return lm.get_decoder() if hasattr(lm, "get_decoder") else model


def selects_targets(model: Any) -> bool:
    """Whether the loss can skip the positions without a target for this model."""
    lm = _causal_lm(model)
    config = getattr(lm, "config", None)
    return (
        getattr(config, "model_type", None) in SELECTED_HEAD_TYPES
        and hasattr(lm, "get_decoder")
        and hasattr(lm, "lm_head")
        and getattr(config, "logit_scale", None) is None
    )


def batch_loss(model: Any, batch: Any, num_items: int) -> Any:
    """Sum of the cross-entropy over the batch's target tokens, divided by ``num_items`` (the target
    tokens of the whole optimizer step, so micro-batches add up to the step's mean)."""
    import torch

    if not selects_targets(model):
        output = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
            labels=batch.labels, num_items_in_batch=torch.tensor(num_items, device=batch.input_ids.device),
        )  # fmt: skip
        return output.loss
    lm = _causal_lm(model)
    hidden = lm.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).last_hidden_state
    # Position t predicts token t + 1: the label of t is labels[t + 1].
    targets = batch.labels[:, 1:]
    chosen = targets != IGNORE_INDEX
    logits = lm.lm_head(hidden[:, :-1][chosen])
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[chosen], reduction="sum")
    return loss / max(1, num_items)
