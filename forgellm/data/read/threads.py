"""Reply threads linked by ids (forum and social-media exports, OpenAssistant/H2O message trees): rows that
each hold one message, an id and the id of the message they reply to, rebuilt into conversations.

Linking needs the whole file: a reply may come before or after its parent, anywhere in the file. So
``link_threads`` reads every item first, keeping per row only the id, the parent id, the text, the
author or role, and where the row was (line, file) -- the text is most of that memory; nothing else of
the row is kept. Then it yields, in a deterministic order, one Record per conversation and one BadRow per
message that cannot be placed.

Decisions:
- A conversation is the path from a root to a leaf. Every message is then in at least one example, and
  each example is a whole exchange as it happened; a conversation per node would repeat each prefix once
  per reply and weight deep threads quadratically (the usual way to train on OASST-style trees).
- Roles: from the role column when the recipe maps one (data.recipe.role_map, then the built-in names:
  prompter/human/user -> user, assistant/bot/gpt -> assistant; ``drop`` removes the message, its replies
  stay); else from the author column: the author of the thread's first message is the user, every other
  author the assistant; else by depth (the first message is the user's, then they alternate).
  Consecutive turns of one role are merged later by the recipe, which also rejects a conversation with
  no assistant turn after a user turn.
- A message starts a thread when its parent is empty: None, '', NaN, 'nan', 'null', 'none', or '0' / '-1'
  when no message has that id (the "no parent" sentinels of forum databases and pandas exports).
- A row without the parent key (JSON exports leave out nulls) starts a thread too; but when no row has
  the parent column at all, the recipe names the wrong column, and every row is rejected saying so.
- A row with an empty id can still end a conversation (nothing can reply to it).
- Ids are compared as text, with integral numbers written without a fraction ("123.0" and 123 are "123"):
  pandas turns an id column with gaps into floats.
- Bad links cut the thread there, each cut message a reject with its line: a parent id that is not in
  the file, a reply cycle, an id seen before (the later row), an unknown role; the replies below a cut
  message are rejected too, saying where the thread was cut. Every row ends in a conversation or in the
  rejects, never silently nowhere.
- Order: by the position in the input of the leaf (for a conversation) or of the row (for a reject), so
  the stream, and a resumed preparation, are the same on every run.
- Ids are global across the files of a folder input (a reply may sit in another file).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from forgellm.config.schema import RecipeSection
from forgellm.data.read.records import BadRow, RecipeError, Record

# Parent values that mean "no parent" only when no message has that id.
SENTINEL_ROOTS = frozenset({"0", "-1"})
_EMPTY = frozenset({"", "nan", "null", "none", "nil"})
_INTEGRAL = re.compile(r"^-?\d+\.0+$")
_EXCERPT = 160


def link_threads(items: Iterable[Record | BadRow], recipe: RecipeSection) -> LinkedThreads:
    """The conversations of the reply forest in ``items`` (see the module's decisions), with the rows
    that cannot be placed as BadRows; reads all of ``items`` now. The result's ``count`` is how many items
    it yields (for a progress bar)."""
    return LinkedThreads(items, recipe)


def link_sample(records: Iterable[Record | BadRow], recipe: RecipeSection) -> list[Record]:
    """The conversations a sample links into, for planning and study to check a recipe against. A sample
    (the first rows of a file) may cut trees: messages whose parent is outside it are left out."""
    return [item for item in link_threads(records, recipe) if isinstance(item, Record)]


@dataclass(slots=True)
class _Message:
    """What a row keeps while the file is read: enough to link it and to build its turn."""

    id: str | None
    parent: str | None
    text: Any
    speaker: str | None  # the raw role, or the author
    line: int
    source: str
    position: int  # the order in the input, for a deterministic output


# Column names used when data.recipe.columns does not name one (prepare's DEFAULT_COLUMNS["thread"] too);
# "messages" is the field each linked conversation carries.
THREAD_COLUMNS = {"id": "id", "parent": "parent_id", "text": "text", "messages": "messages"}


class LinkedThreads(Iterator[Record | BadRow]):
    """Builds the reply forest of all items, then yields conversations and rejects in input order."""

    def __init__(self, items: Iterable[Record | BadRow], recipe: RecipeSection) -> None:
        if recipe.columns.get("tree"):  # nested reply trees: one record per message first (trees.py)
            from forgellm.data.read.trees import flatten_trees

            items = flatten_trees(items, recipe)
        defaults = THREAD_COLUMNS
        self.recipe = recipe
        self.columns = {
            key: _one(recipe.columns.get(key) or defaults.get(key))  # type: ignore[call-overload]
            for key in ("id", "parent", "text", "author", "role", "messages")
        }
        self.by_role = self.columns["role"] is not None
        self.by_author = not self.by_role and self.columns["author"] is not None
        self.messages: list[_Message] = []
        self.rejected: dict[int, str] = {}  # message index -> reason
        self.read_errors: list[tuple[int, BadRow]] = []  # (position, BadRow) as the reader gave them
        self.parent_seen = False  # a row without the parent column starts a thread, unless no row has it
        self._read(items)
        if not self.parent_seen:
            self._no_parent_column()
        self.up: list[int | None] = [None] * len(self.messages)  # parent's index, None for a root
        self.roles: list[str | None] = [None] * len(self.messages)
        self._link()
        self._output = self._order()
        self.count = len(self._output)
        self._next = 0

    # -- reading -------------------------------------------------------------------------------
    def _read(self, items: Iterable[Record | BadRow]) -> None:
        for position, item in enumerate(items):
            if isinstance(item, BadRow):
                self.read_errors.append((position, item))
                continue
            fields = item.fields
            missing = [
                f"column {name!r} ({key}) is missing; available columns: "
                f"{', '.join(repr(k) for k in fields) or 'none'}. Set data.recipe.columns.{key}"
                for key in ("id", "text", "author", "role")  # a row without the parent key is a root
                if (name := self.columns[key]) is not None
                and name not in fields
                and (key in ("id", "text") or key in self.recipe.columns)
            ]
            self.parent_seen = self.parent_seen or self.columns["parent"] in fields
            index = len(self.messages)
            try:
                message_id = norm_id(fields.get(self.columns["id"]), "id", self.columns["id"])
                parent = norm_id(fields.get(self.columns["parent"]), "parent", self.columns["parent"])
            except RecipeError as exc:
                missing.append(str(exc))
                message_id = parent = None
            speaker_column = self.columns["role"] if self.by_role else self.columns["author"]
            speaker = fields.get(speaker_column) if speaker_column else None
            if speaker is not None and not (isinstance(speaker, float) and math.isnan(speaker)):
                speaker = str(speaker).strip()
            else:
                speaker = None
            text = fields.get(self.columns["text"])
            if isinstance(text, bool) or not isinstance(text, str | int | float | None):
                missing.append(f"column {self.columns['text']!r} (text) holds {type(text).__name__}, not text")
                text = None
            self.messages.append(_Message(message_id, parent, text, speaker, item.line, item.source, position))
            if missing:
                self.rejected[index] = missing[0]

    def _no_parent_column(self) -> None:
        """No row has the parent column: the recipe names the wrong one (linking nothing would turn every
        row into a conversation of one message)."""
        column = self.columns["parent"]
        for index in range(len(self.messages)):
            self.rejected.setdefault(
                index,
                f"column {column!r} (parent) is missing in every row; set data.recipe.columns.parent to the "
                "column that holds the id of the message replied to",
            )

    # -- linking -------------------------------------------------------------------------------
    def _link(self) -> None:
        by_id: dict[str, int] = {}
        for index, message in enumerate(self.messages):
            if index in self.rejected or message.id is None:
                continue
            first = by_id.setdefault(message.id, index)
            if first != index:
                where = _where(self.messages[first], message)
                self.rejected[index] = f"duplicate id {message.id!r} (first at {where}); the later row is left out"
        for index, message in enumerate(self.messages):
            if index in self.rejected or message.parent is None:
                continue
            parent = by_id.get(message.parent)
            if parent is not None:
                self.up[index] = parent
            elif message.parent not in SENTINEL_ROOTS:
                self.rejected[index] = f"parent id {message.parent!r} not found in the file"
        self._reject_cycles()
        if self.by_role:
            self._map_roles()
        self._cut_below_rejected()

    def _reject_cycles(self) -> None:
        """Messages whose parent chain comes back to itself: each one on the loop is rejected."""
        state = [0] * len(self.messages)  # 0 unseen, 1 on the chain being followed, 2 done
        for start in range(len(self.messages)):
            chain: list[int] = []
            node: int | None = start
            while node is not None and state[node] == 0 and node not in self.rejected:
                state[node] = 1
                chain.append(node)
                node = self.up[node]
            if node is not None and state[node] == 1:  # came back to the chain: a cycle from `node` on
                loop = chain[chain.index(node) :]
                ids = " -> ".join(repr(self.messages[i].id) for i in [*loop, loop[0]])
                for i in loop:
                    self.rejected[i] = f"reply cycle through ids {ids}"
            for i in chain:
                state[i] = 2

    def _map_roles(self) -> None:
        from forgellm.data.read.roles import map_role

        column = self.columns["role"]
        for index, message in enumerate(self.messages):
            if index in self.rejected:
                continue
            if not message.speaker:
                self.rejected[index] = f"no role: column {column!r} (role) is empty"
                continue
            try:
                self.roles[index] = map_role(message.speaker, self.recipe)
            except RecipeError as exc:
                self.rejected[index] = str(exc)

    def _cut_below_rejected(self) -> None:
        """The replies under a rejected message are cut with it, each saying where its thread was cut."""
        children: dict[int, list[int]] = {}
        for index, parent in enumerate(self.up):
            if parent is not None:
                children.setdefault(parent, []).append(index)
        for cut in sorted(self.rejected):
            reason = self.rejected[cut]
            if reason.startswith("cut from its thread"):
                continue
            cause = f"cut from its thread at line {self.messages[cut].line}: {reason}"
            stack = list(children.get(cut, []))
            while stack:
                node = stack.pop()
                if node in self.rejected:
                    continue  # already cut (a cycle member, or a row rejected for a reason of its own)
                self.rejected[node] = cause
                stack.extend(children.get(node, []))

    def _order(self) -> list[tuple[int, int, int]]:
        """(position, kind, index) of every output item: 0 a reader's BadRow, 1 a rejected message, 2 a leaf."""
        has_child = [False] * len(self.messages)
        for index, parent in enumerate(self.up):
            if parent is not None and index not in self.rejected:
                has_child[parent] = True
        output = [(position, 0, i) for i, (position, _) in enumerate(self.read_errors)]
        for index, message in enumerate(self.messages):
            if index in self.rejected:
                output.append((message.position, 1, index))
            elif not has_child[index]:
                output.append((message.position, 2, index))
        output.sort()
        return output

    # -- output --------------------------------------------------------------------------------
    def __next__(self) -> Record | BadRow:
        if self._next >= len(self._output):
            raise StopIteration
        _, kind, index = self._output[self._next]
        self._next += 1
        if kind == 0:
            return self.read_errors[index][1]
        message = self.messages[index]
        if kind == 1:
            return BadRow(message.line, self.rejected[index], message.source, _excerpt(message))
        return self._conversation(index)

    def _conversation(self, leaf: int) -> Record:
        path: list[int] = []
        node: int | None = leaf
        while node is not None:
            path.append(node)
            node = self.up[node]
        path.reverse()
        root = self.messages[path[0]]
        turns = []
        for depth, index in enumerate(path):
            message = self.messages[index]
            if self.by_role:
                role = self.roles[index]
            elif self.by_author:
                role = "user" if message.speaker == root.speaker else "assistant"
            else:
                role = "user" if depth % 2 == 0 else "assistant"
            if role != "drop":
                turns.append({"role": role, "content": _content(message.text)})
        leaf_message = self.messages[leaf]
        thread = root.id if root.id is not None else f"{root.source}:{root.line}"
        fields = {self.columns["messages"] or "messages": turns, "thread": thread}
        return Record(leaf_message.line, fields, leaf_message.source)


def _one(name: str | list[str] | None) -> str | None:
    return ", ".join(name) if isinstance(name, list) else name


def norm_id(value: Any, key: str, column: str | None) -> str | None:
    """An id as comparable text, or None when empty (see the module's decisions)."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _EMPTY:
            return None
        return text.split(".", 1)[0] if _INTEGRAL.match(text) else text
    raise RecipeError(f"column {column!r} ({key}) holds {type(value).__name__}, not an id")


def _content(text: Any) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return text if isinstance(text, str) else str(text)


def _where(first: _Message, later: _Message) -> str:
    return f"line {first.line}" + (f" of {first.source}" if first.source != later.source else "")


def _excerpt(message: _Message) -> str:
    return _content(message.text)[:_EXCERPT]
