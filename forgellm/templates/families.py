"""Builtin chat-template families, expressed as data.

One frozen ``TemplateSpec`` per family. The generic renderer (``render.py``), the HF Jinja generator
(``hf_jinja.py``) and, later, the Ollama Go-template generator all read these fields; no family has
code of its own. Placeholders inside format strings:

- ``{role}``    the display name of the message's role (``role_names``; user-configurable),
- ``{content}`` the message text,
- ``{bos}``     the tokenizer's BOS token when BOS is added, else the empty string,
- ``{eos}``     the tokenizer's EOS token (the family default when there is no tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

SystemHandling = Literal["native", "fold_into_first_user"]
CANONICAL_ROLES = ("system", "user", "assistant")


def _names(system: str = "system", user: str = "user", assistant: str = "assistant") -> MappingProxyType:
    return MappingProxyType({"system": system, "user": user, "assistant": assistant})


@dataclass(frozen=True)
class TemplateSpec:
    """The definition of one chat format. Only ``assistant content + end_of_turn`` is ever trained."""

    name: str
    description: str
    # Text that opens every conversation (usually "{bos}"); never trained.
    conversation_prefix: str
    # Whole system / user turns, including their own end marker and separator; never trained.
    user_format: str
    system_format: str | None
    # Assistant turn = assistant_prefix (not trained) + content + end_of_turn (trained) + separator (not).
    assistant_prefix: str
    end_of_turn: str
    separator: str
    system_handling: SystemHandling = "native"
    # Used when system_handling == "fold_into_first_user"; placeholders {system} and {user}.
    fold_format: str = "{system}\n\n{user}"
    default_system: str | None = None
    role_names: MappingProxyType = field(default_factory=_names)
    # Stop strings for generation; placeholders allowed.
    stop: tuple[str, ...] = ()
    # Marker strings that must each be ONE token of the vocabulary (bos/eos are checked separately).
    special_tokens: tuple[str, ...] = ()
    # None = add a BOS exactly when the tokenizer itself adds one to plain text.
    add_bos: bool | None = True
    default_bos: str = "<s>"
    default_eos: str = "</s>"
    # What is appended for add_generation_prompt; None = assistant_prefix. Differs only where the
    # prefix ends in a space that the tokenizer would merge into the first word (llama2).
    generation_prompt: str | None = None
    # Alpaca separates blocks with "\n\n" but does not end the conversation with it.
    separator_after_last: bool = True

    @property
    def uses_eos(self) -> bool:
        parts = (self.conversation_prefix, self.user_format, self.system_format or "", self.end_of_turn)
        return any("{eos}" in p for p in parts)

    @property
    def uses_bos(self) -> bool:
        parts = (self.conversation_prefix, self.user_format, self.system_format or "", self.assistant_prefix)
        return any("{bos}" in p for p in parts)


CHATML = TemplateSpec(
    name="chatml",
    description="ChatML (Qwen, SmolLM)",
    conversation_prefix="{bos}",
    system_format="<|im_start|>{role}\n{content}<|im_end|>\n",
    user_format="<|im_start|>{role}\n{content}<|im_end|>\n",
    assistant_prefix="<|im_start|>{role}\n",
    end_of_turn="<|im_end|>",
    separator="\n",
    stop=("<|im_end|>",),
    special_tokens=("<|im_start|>", "<|im_end|>"),
    add_bos=False,
    default_bos="",
    default_eos="<|im_end|>",
)

LLAMA2 = TemplateSpec(
    name="llama2",
    description="Llama 2 chat ([INST] ... [/INST], <<SYS>> folded into the first user turn)",
    conversation_prefix="",
    system_format=None,
    # Llama 2 opens every user turn with its own BOS.
    user_format="{bos}[INST] {content} [/INST]",
    assistant_prefix=" ",
    end_of_turn=" {eos}",
    separator="",
    system_handling="fold_into_first_user",
    fold_format="<<SYS>>\n{system}\n<</SYS>>\n\n{user}",
    stop=("{eos}",),
    generation_prompt="",
)

LLAMA3 = TemplateSpec(
    name="llama3",
    description="Llama 3 / 3.x instruct",
    conversation_prefix="{bos}",
    system_format="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
    user_format="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
    assistant_prefix="<|start_header_id|>{role}<|end_header_id|>\n\n",
    end_of_turn="<|eot_id|>",
    separator="",
    stop=("<|eot_id|>", "{eos}"),
    special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    default_bos="<|begin_of_text|>",
    default_eos="<|end_of_text|>",
)

ALPACA = TemplateSpec(
    name="alpaca",
    description="Alpaca instruction format (works with any vocabulary; needs only an EOS token)",
    conversation_prefix="{bos}",
    system_format="{content}\n\n",
    user_format="### {role}:\n{content}\n\n",
    assistant_prefix="### {role}:\n",
    end_of_turn="{eos}",
    separator="\n\n",
    default_system=(
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    ),
    role_names=_names(system="System", user="Instruction", assistant="Response"),
    stop=("{eos}", "### Instruction:"),
    add_bos=None,
    separator_after_last=False,
)

GEMMA = TemplateSpec(
    name="gemma",
    description="Gemma / Gemma 2 (no system role: folded into the first user turn)",
    conversation_prefix="{bos}",
    system_format=None,
    user_format="<start_of_turn>{role}\n{content}<end_of_turn>\n",
    assistant_prefix="<start_of_turn>{role}\n",
    end_of_turn="<end_of_turn>",
    separator="\n",
    system_handling="fold_into_first_user",
    role_names=_names(assistant="model"),
    stop=("<end_of_turn>", "{eos}"),
    special_tokens=("<start_of_turn>", "<end_of_turn>"),
    default_bos="<bos>",
    default_eos="<eos>",
)

MISTRAL = TemplateSpec(
    name="mistral",
    description="Mistral instruct ([INST] ... [/INST], system folded into the first user turn)",
    conversation_prefix="{bos}",
    system_format=None,
    user_format="[INST] {content} [/INST]",
    assistant_prefix="",
    end_of_turn="{eos}",
    separator="",
    system_handling="fold_into_first_user",
    stop=("{eos}",),
)

PHI3 = TemplateSpec(
    name="phi3",
    description="Phi-3 instruct",
    conversation_prefix="{bos}",
    system_format="<|{role}|>\n{content}<|end|>\n",
    user_format="<|{role}|>\n{content}<|end|>\n",
    assistant_prefix="<|{role}|>\n",
    end_of_turn="<|end|>",
    separator="\n",
    stop=("<|end|>", "{eos}"),
    special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    add_bos=False,
    default_eos="<|endoftext|>",
)

ZEPHYR = TemplateSpec(
    name="zephyr",
    description="Zephyr (TinyLlama-Chat); the role markers are plain text, only EOS is special",
    conversation_prefix="{bos}",
    system_format="<|{role}|>\n{content}{eos}\n",
    user_format="<|{role}|>\n{content}{eos}\n",
    assistant_prefix="<|{role}|>\n",
    end_of_turn="{eos}",
    separator="\n",
    stop=("{eos}",),
    add_bos=False,
)

FAMILIES: MappingProxyType = MappingProxyType(
    {s.name: s for s in (CHATML, LLAMA2, LLAMA3, ALPACA, GEMMA, MISTRAL, PHI3, ZEPHYR)}
)
BUILTIN_NAMES: tuple[str, ...] = tuple(FAMILIES)
