"""The bundled SmolLM2-135M-Instruct through the converter: llama.cpp answers exactly as transformers does."""

from __future__ import annotations

import numpy as np
import pytest
from gguf_support import one_torch_thread

from forgellm.export.gguf_convert import convert_to_gguf

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Give me a recipe for pancakes with step by step instructions.",
    "List ten tips for keeping a vegetable garden healthy, with a sentence on each.",
    "Describe the water cycle to a ten year old child.",
    "What are the main differences between a cat and a dog as pets? Answer at length.",
)
NEW_TOKENS = 32
TIE = 0.01  # logits; transformers' own top-2 gap below which the greedy choice is a coin toss
HELD_OUT = (
    "The old railway station had been closed for nearly twenty years before the town council decided to turn it "
    "into a library. Volunteers cleared the waiting room, repaired the wooden benches and painted the ticket "
    "office a pale shade of green. On the first morning the doors opened, a queue of children stretched along "
    "the platform, each of them holding a card with their name written in careful letters. The librarian, a "
    "retired teacher called Margaret, greeted every one of them and asked what kind of stories they liked best. "
    "Some wanted dragons, some wanted detectives, and one small boy asked for a book about trains, which made "
    "everyone laugh. By the end of the week the shelves that had looked so empty were already full of gaps "
    "where borrowed books had been, and the council began to talk about opening a second room upstairs."
)
_CACHE: dict = {}


@pytest.fixture(autouse=True)
def _single_threaded_torch():
    with one_torch_thread():
        yield


@pytest.fixture
def bundled_gguf(bundled_model_dir, tmp_path_factory):
    """Factory: quant -> GGUF of the bundled model (converted once per test session)."""

    def get(quant: str):
        key = (str(bundled_model_dir), quant)
        if key not in _CACHE:
            folder = tmp_path_factory.mktemp(f"bundled-{quant}")
            _CACHE[key] = convert_to_gguf(
                bundled_model_dir, folder / f"smollm2-{quant}.gguf", quant=quant, eot_tokens=["<|im_end|>"]
            )
        return _CACHE[key]

    return get


@pytest.fixture
def bundled_hf(bundled_model_dir):
    """(tokenizer, fp32 model) of the bundled folder, loaded once per session."""
    key = ("hf", str(bundled_model_dir))
    if key not in _CACHE:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
        model = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32).eval()
        _CACHE[key] = (tokenizer, model)
    return _CACHE[key]


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def _open(path, n_ctx: int = 512):
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=1, verbose=False
    )


def _llama_greedy(llm, ids: list[int], count: int, banned: list[int]) -> list[int]:
    llm.reset()
    llm.eval(ids)
    produced = []
    for _ in range(count):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        logits[banned] = -np.inf
        token = int(logits.argmax())
        produced.append(token)
        llm.eval([token])
    return produced


def _hf_greedy(model, ids: list[int], count: int) -> tuple[list[int], np.ndarray]:
    """transformers' greedy continuation and, per step, the gap between its two best logits."""
    import torch

    key = ("greedy", tuple(ids), count)
    if key not in _CACHE:
        with torch.no_grad():
            # min_new_tokens masks EOS, so every prompt yields `count` tokens; the llama.cpp loop bans it too.
            out = model.generate(torch.tensor([ids]), max_new_tokens=count, min_new_tokens=count, do_sample=False)
            produced = out[0, len(ids) :].tolist()
            logits = model(out).logits[0, len(ids) - 1 : -1].numpy()
        top2 = np.sort(logits, axis=-1)[:, -2:]
        _CACHE[key] = (produced, top2[:, 1] - top2[:, 0])
    return _CACHE[key]


def _eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return list(eos) if isinstance(eos, list) else [eos]


def test_f16_greedy_tokens_equal_transformers(bundled_gguf, bundled_hf):
    tokenizer, model = bundled_hf
    llm = _open(bundled_gguf("f16"))
    for prompt in PROMPTS:
        ids = _prompt_ids(tokenizer, prompt)
        # The GGUF vocab must tokenize the rendered chat prompt exactly as transformers does.
        assert llm.tokenize(tokenizer.decode(ids).encode(), add_bos=False, special=True) == ids
        expected, margins = _hf_greedy(model, ids, NEW_TOKENS)
        got = _llama_greedy(llm, ids, NEW_TOKENS, _eos_ids(model))
        diverged = next((step for step, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b), None)
        # Only an exact tie (fp32 rounding decides it in transformers itself) may send the two apart.
        assert diverged is None or margins[diverged] < TIE, (prompt, diverged, tokenizer.decode(expected))


def test_q8_0_first_tokens_and_perplexity_close_to_f16(bundled_gguf, bundled_hf):
    tokenizer, model = bundled_hf
    f16, q8 = _open(bundled_gguf("f16")), _open(bundled_gguf("q8_0"))
    banned = _eos_ids(model)
    agree = 0
    for prompt in PROMPTS:
        ids = _prompt_ids(tokenizer, prompt)
        same = _llama_greedy(q8, ids, 1, banned) == _llama_greedy(f16, ids, 1, banned)
        agree += same
        # 8-bit weights move logits by a few tenths: a first choice clearer than that must not change.
        assert same or _hf_greedy(model, ids, NEW_TOKENS)[1][0] < 0.5, prompt
    assert agree >= len(PROMPTS) - 1
    text_ids = tokenizer.encode(HELD_OUT, add_special_tokens=False)
    assert f16.tokenize(HELD_OUT.encode(), add_bos=False, special=False) == text_ids
    ppl_f16, ppl_q8 = _perplexity(f16, text_ids), _perplexity(q8, text_ids)
    assert ppl_f16 < 60, ppl_f16  # about 27 for this paragraph; a broken conversion gives hundreds or more
    assert abs(ppl_q8 - ppl_f16) / ppl_f16 < 0.02, (ppl_f16, ppl_q8)


def _perplexity(llm, ids: list[int]) -> float:
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids) - 1], dtype=np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = log_probs[np.arange(len(ids) - 1), ids[1:]]
    return float(np.exp(-picked.mean()))
