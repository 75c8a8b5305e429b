"""Chat templates: one definition per family, rendered as text, as (input_ids, labels) with
assistant-only loss, as a generation prompt, as a Hugging Face Jinja template and as an Ollama Go template.

Nothing here imports torch or transformers at module level; tokenizers are passed in.
"""

from .build import TEMPLATE_NAMES, build_chat_format
from .detect import detect_template, fitting_templates, pad_token_warning
from .families import BUILTIN_NAMES, FAMILIES, TemplateSpec
from .hf_jinja import to_hf_jinja
from .jinja_format import JinjaChatFormat
from .messages import ChatFormat, RenderedConversation, validate_messages
from .ollama import to_ollama_template
from .render import BuiltinChatFormat
from .tokens import IGNORE_INDEX, TokenizedConversation, tokenize_conversation

__all__ = [
    "BUILTIN_NAMES",
    "FAMILIES",
    "IGNORE_INDEX",
    "TEMPLATE_NAMES",
    "BuiltinChatFormat",
    "ChatFormat",
    "JinjaChatFormat",
    "RenderedConversation",
    "TemplateSpec",
    "TokenizedConversation",
    "build_chat_format",
    "detect_template",
    "fitting_templates",
    "pad_token_warning",
    "to_hf_jinja",
    "to_ollama_template",
    "tokenize_conversation",
    "validate_messages",
]
