"""Nested reply trees (a message object holding its replies, which hold theirs: OpenAssistant's
``*_trees.jsonl`` exports, comment trees): flattened into one record per message so that the reply-thread
linker (``threads.py``) builds the conversations, exactly as for a flat id/parent table.

``data.recipe.columns.tree`` names the field holding the root message; ``id``, ``parent``, ``text`` and
``role``/``author`` name keys inside each message. A message without an id gets one from its place in
the tree (``<line>/<path>``) and every message's parent is the message it is nested in, whatever its own
parent key says: the nesting is the link.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from forgellm.config.schema import RecipeSection
from forgellm.data.read.columns import Column
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import BadRow, Record

REPLY_KEYS = ("replies", "children", "responses", "comments")
TEXT_KEYS = ("text", "content", "body", "message")
ID_KEYS = ("message_id", "id", "uuid", "comment_id")
PARENT_KEYS = ("parent_id", "parent", "in_reply_to")
ROLE_KEYS = ("role", "from", "speaker")
AUTHOR_KEYS = ("user_id", "author", "user", "username")


def _node(value: Any) -> dict | None:
    if isinstance(value, str) and value.lstrip()[:1] == "{":
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def _replies(node: dict) -> list | None:
    return next((node[k] for k in REPLY_KEYS if isinstance(node.get(k), list)), None)


def flatten_trees(items: Iterable[Record | BadRow], recipe: RecipeSection) -> Iterator[Record | BadRow]:
    """One record per message of each tree, depth first, with ``id`` and ``parent`` keys set from the
    nesting; a record whose tree field holds no message object is rejected with the reason."""
    column = recipe.columns.get("tree")
    id_key = str(recipe.columns.get("id") or "id")
    parent_key = str(recipe.columns.get("parent") or "parent_id")
    for item in items:
        if isinstance(item, BadRow):
            yield item
            continue
        root = _node(item.fields.get(str(column)))
        if root is None:
            yield BadRow(item.line, f"field {column!r} holds no message object (a reply tree)", item.source)
            continue
        stack: list[tuple[dict, str | None, str]] = [(root, None, "0")]
        while stack:
            node, parent, path = stack.pop()
            fields = {k: v for k, v in node.items() if k not in REPLY_KEYS}
            own = fields.get(id_key)
            fields[id_key] = str(own) if own not in (None, "") else f"{item.line}/{path}"
            fields[parent_key] = parent
            yield Record(item.line, fields, item.source)
            children = [c for c in (_replies(node) or []) if isinstance(c, dict)]
            for i, child in reversed(list(enumerate(children))):  # reversed: popped in document order
                stack.append((child, fields[id_key], f"{path}.{i}"))


def detect_tree(cols: dict[str, Column]) -> Detection | None:
    """A field whose values are message objects with their replies nested inside."""
    for col in cols.values():
        nodes = [n for n in map(_node, col.values) if n is not None]
        if len(nodes) < 0.8 * col.rows or not nodes:
            continue
        nested = [n for n in nodes if _replies(n) is not None]
        if len(nested) < 0.8 * len(nodes):
            continue
        keys = {k for n in nodes for k in n}
        text = next((k for k in TEXT_KEYS if k in keys), None)
        if text is None:
            continue
        columns: dict[str, Any] = {
            "tree": col.name,
            "id": next((k for k in ID_KEYS if k in keys), "id"),
            "parent": next((k for k in PARENT_KEYS if k in keys), "parent_id"),
            "text": text,
        }
        role = next((k for k in ROLE_KEYS if k in keys), None)
        author = next((k for k in AUTHOR_KEYS if k in keys), None)
        if role is not None:
            columns["role"] = role
        elif author is not None:
            columns["author"] = author
        who = f"roles from {role!r}" if role else (f"the first author ({author!r}) is the user" if author else
                                                   "turns alternate from the first message, the user's")  # fmt: skip
        reasons = [
            f"field {col.name!r} holds reply trees: each message with its replies nested inside "
            f"({_replies_key(nested)!r}); each path from the first message to a last reply becomes one "
            f"conversation; text in {text!r}, {who}"
        ]
        return Detection("thread", RecipeSection(columns=columns), 0.93, reasons)
    return None


def _replies_key(nodes: list[dict]) -> str:
    return next((k for k in REPLY_KEYS if isinstance(nodes[0].get(k), list)), REPLY_KEYS[0])
