"""A chat, independent of any screen: the history, the system prompt and the slash commands.

A session keeps one history per model it talks to (``lanes``), so with --compare the base and the
fine-tuned model each see their own earlier answers to the same user messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forgellm.inference.engines import InferenceEngine
    from forgellm.templates.messages import ChatFormat

HELP = """Commands:
  /system TEXT  set the system prompt (it applies to the whole conversation); /system alone shows it
  /reset        forget the conversation so far (the system prompt stays)
  /help         show this help
  /exit         leave (Ctrl-D does the same)
Anything else is sent to the model. Start a message with // to send one that begins with /."""


@dataclass(frozen=True)
class CommandResult:
    """What a slash command did: a message to show, and whether the chat ends."""

    message: str
    exit: bool = False


@dataclass
class ChatSession:
    lanes: int = 1
    system_prompt: str | None = None  # None: the chat format's own default (forge.yaml's system_prompt)
    default_system_prompt: str | None = None  # shown by /system when none was set here
    # Control-token strings the chat format refuses inside messages; kept out of recorded answers, so one
    # odd answer (a model that printed <|im_start|>) cannot make every later turn fail to render.
    forbidden: tuple[str, ...] = ()
    histories: list[list[dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.histories:
            self.histories = [[] for _ in range(self.lanes)]

    @property
    def turns(self) -> int:
        return len(self.histories[0]) // 2

    def command(self, line: str) -> CommandResult | None:
        """Handle `line` when it is a slash command; None when it is a message for the model."""
        text = line.strip()
        if not text.startswith("/") or text.startswith("//"):
            return None
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return CommandResult("Bye.", exit=True)
        if name == "/help":
            return CommandResult(HELP)
        if name == "/reset":
            self.reset()
            return CommandResult("Conversation cleared.")
        if name == "/system":
            if not argument:
                return CommandResult(self.describe_system_prompt())
            self.system_prompt = argument
            return CommandResult(f"System prompt set: {argument}")
        return CommandResult(f"Unknown command {name}.\n{HELP}")

    @staticmethod
    def message_text(line: str) -> str:
        """The text to send for a non-command line (a leading // stands for a literal /)."""
        text = line.strip()
        return text[1:] if text.startswith("//") else text

    def describe_system_prompt(self) -> str:
        if self.system_prompt is not None:
            return f"System prompt: {self.system_prompt}"
        if self.default_system_prompt:
            return f"System prompt (the chat template's default): {self.default_system_prompt}"
        return "No system prompt. Set one with /system TEXT."

    def reset(self) -> None:
        self.histories = [[] for _ in range(self.lanes)]

    def messages(self, user_text: str, lane: int = 0) -> list[dict[str, str]]:
        """The conversation to send for a new user message: system prompt, history, the message."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, *self.histories[lane], {"role": "user", "content": user_text}]

    def record(self, user_text: str, answers: Sequence[str]) -> None:
        """Keep a finished exchange: the same user message, each lane's own answer."""
        assert len(answers) == self.lanes, "one answer per lane"
        for history, answer in zip(self.histories, answers, strict=True):
            for marker in self.forbidden:
                answer = answer.replace(marker, "")
            history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer.strip()}]


def session_for(engines: Sequence[InferenceEngine], system_prompt: str | None = None) -> ChatSession:
    """A session for these engines (all render with the same chat format)."""
    chat_format = engines[-1].chat_format
    return ChatSession(len(engines), system_prompt, default_system_prompt(chat_format), forbidden=chat_format.forbidden)


def default_system_prompt(chat_format: ChatFormat) -> str | None:
    """The system prompt a format adds by itself (builtin families and forge.yaml's system_prompt)."""
    return chat_format.system_prompt or None
