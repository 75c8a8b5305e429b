"""A tiny random model built in-process: the local-folder path end to end, and the estimator's
parameter arithmetic checked against real torch modules."""

from __future__ import annotations

import pytest
from templates_support import make_tokenizer

from forgellm.config.schema import ChatTemplateSection
from forgellm.errors import ForgeError
from forgellm.hardware.memory import count_params, lora_trainable_params
from forgellm.models.dims import dims_from_config
from forgellm.models.loading import chat_setup
from forgellm.models.resolve import resolve_model
from forgellm.templates import IGNORE_INDEX, tokenize_conversation

SPECIALS = ("<s>", "</s>", "<pad>", "<unk>", "<|im_start|>", "<|im_end|>")
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "On its way."},
]


def build_tiny_llama(folder, *, tied: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(specials=SPECIALS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, config


@pytest.mark.parametrize("tied", [True, False])
def test_param_count_formula_matches_real_modules(tmp_path, tied):
    model, config = build_tiny_llama(tmp_path, tied=tied)
    real = sum(p.numel() for name, p in model.named_parameters() if "norm" not in name)
    assert count_params(dims_from_config(config))[0] == real


def test_lora_trainable_params_match_real_linear_shapes(tmp_path):
    import torch

    model, config = build_tiny_llama(tmp_path, tied=True)
    rank = 4
    linears = [m for name, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)]
    expected = sum(rank * (m.in_features + m.out_features) for m in linears)
    assert lora_trainable_params(dims_from_config(config), rank, "all-linear") == expected


def test_local_tiny_model_chat_setup_detects_and_trains_on_answers(tmp_path):
    import torch

    model, _ = build_tiny_llama(tmp_path, tied=True)
    assert resolve_model(str(tmp_path)).kind == "local"
    setup = chat_setup(str(tmp_path))
    # No chat_template in the tokenizer, a llama config and no <|eot_id|> in the vocabulary -> llama2.
    assert setup.template_name == "llama2"
    tokens = tokenize_conversation(setup.chat_format, setup.tokenizer, CHAT)
    trained = [t for t, label in zip(tokens.input_ids, tokens.labels, strict=True) if label != IGNORE_INDEX]
    assert setup.tokenizer.decode(trained) == "On its way. </s>"
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([tokens.input_ids]),
            labels=torch.tensor([tokens.labels]),
        )
    assert torch.isfinite(out.loss)


def test_forge_yaml_template_settings_apply_to_local_model(tmp_path):
    build_tiny_llama(tmp_path, tied=True)
    settings = ChatTemplateSection(name="chatml", system_prompt="Default system.", role_names={"assistant": "bot"})
    setup = chat_setup(str(tmp_path), settings)
    text = setup.chat_format.render_text(CHAT[1:])
    assert text.startswith("<|im_start|>system\nDefault system.<|im_end|>\n")
    assert "<|im_start|>bot\nOn its way.<|im_end|>" in text


def test_custom_jinja_from_file_relative_to_project(tmp_path):
    build_tiny_llama(tmp_path / "model", tied=True)
    (tmp_path / "my.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    settings = ChatTemplateSection(name="custom", jinja="my.jinja")
    setup = chat_setup(str(tmp_path / "model"), settings, base_dir=tmp_path)
    assert setup.chat_format.render_text(CHAT[1:]) == "user: Where is my parcel?\nassistant: On its way.</s>\n"
    missing = ChatTemplateSection(name="custom", jinja="nope.jinja")
    with pytest.raises(ForgeError, match="does not exist"):
        chat_setup(str(tmp_path / "model"), missing, base_dir=tmp_path)


def test_incompatible_template_refused_for_local_model(tmp_path):
    build_tiny_llama(tmp_path, tied=True)
    with pytest.raises(ForgeError) as caught:
        chat_setup(str(tmp_path), ChatTemplateSection(name="gemma"))
    assert "<start_of_turn>" in caught.value.message and "chatml" in caught.value.fix
