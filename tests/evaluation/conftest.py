"""Projects with a finished run of the tiny Llama to evaluate, built once per session where tests only read
them (an evaluation of the tiny model takes seconds; the test files must stay well under a minute)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from evaluation.eval_support import SMALL, build_project
from stage_support import staged


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The tiny model's matrices are 64 wide: on a busy 2-core machine, syncing two threads costs ten times
    the math. One thread while these tests run; the previous setting comes back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with _one_torch_thread():
        yield


@pytest.fixture(scope="session")
def eval_project(tmp_path_factory, tiny_causal_lm_dir, _support_csv) -> Path:
    """A project to evaluate; tests that only read it, or copy it, share it."""
    with _one_torch_thread():
        return build_project(tmp_path_factory.mktemp("eval") / "project", tiny_causal_lm_dir, _support_csv)


@pytest.fixture(scope="session")
def evaluated(eval_project):
    """(project root, EvalResult) of one evaluation of ``eval_project`` with SMALL settings."""
    from forgellm.evaluation import evaluate_run

    with _one_torch_thread():
        return eval_project, evaluate_run(*staged(eval_project), **SMALL)


@pytest.fixture(scope="session")
def stopper_model_dir(tmp_path_factory, tiny_causal_lm_dir) -> Path:
    """The tiny Llama rewired to end its turn at once: the residual stream carries a large constant on one
    dimension, and only the end-of-turn token's output row reads it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("stopper-lm")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_causal_lm_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_causal_lm_dir), dtype=torch.float32)
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight))
        model.model.embed_tokens.weight[:, 0] += 50.0
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("<|im_end|>"), 0] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
