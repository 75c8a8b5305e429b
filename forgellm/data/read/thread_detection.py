"""Detection of reply threads: a sample whose rows are messages linked by an id and a parent-id column
(linking them into conversations is ``threads.py``)."""

from __future__ import annotations

import re
from typing import Any

from forgellm.config.schema import RecipeSection
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import RecipeError, Record
from forgellm.data.read.threads import SENTINEL_ROOTS, norm_id

# -- detection ---------------------------------------------------------------------------------
# Name hints, compared without case, spaces, dashes or underscores.
_PARENT_NAMES = frozenset({
    "parent", "repliedto", "antwortauf", "elternid", "vaterid", "reponsea", "respondea", "rispostaa", "answerto",
})  # fmt: skip
# ... and names that start so: parent_id, parentMessageId, in_reply_to_status_id, in_response_to_tweet_id
_PARENT_PREFIXES = ("parent", "inreplyto", "inresponseto", "replyto", "responseto", "antwortauf")
_ID_NAMES = frozenset({
    "id", "messageid", "msgid", "postid", "commentid", "tweetid", "statusid", "idstr", "uuid", "nodeid", "name",
})  # fmt: skip
_AUTHOR_NAMES = frozenset({
    "author", "authorname", "user", "username", "userscreenname", "screenname", "from", "sender", "speaker",
    "poster", "nick", "nickname", "handle", "autor", "auteur", "benutzer", "authorid", "userid", "owneruserid",
    "ownerdisplayname", "nutzer", "utilisateur",
})  # fmt: skip
_ROLE_NAMES = frozenset({"role", "from", "speaker", "sender", "rolle", "type"})
_TEXT_NAMES = ("text", "content", "body", "message", "fulltext", "comment", "post", "selftext")
# Role values the recipe maps without help, and those that need a role_map entry.
_EXTRA_ROLES = {"customer": "user", "client": "user", "agent": "assistant", "support": "assistant"}


def detect_thread(sample: list[Record]) -> Detection | None:
    """Detection("thread", recipe, confidence, reasons) when the sample holds messages linked by an id
    and a parent-id column, else None. The sample may cut trees (parents outside it): it is enough that
    replies' parents are mostly ids of the sample, or that the parent column's name says so."""
    rows = [r.fields for r in sample if isinstance(r, Record)]
    if len(rows) < 3:
        return None
    columns = list(dict.fromkeys(k for fields in rows for k in fields))
    values = {c: [_scalar(fields.get(c)) for fields in rows] for c in columns}
    best = _best_link(rows, columns, values)
    if best is None:
        return None
    id_column, parent_column, linked, replies, roots, named = best
    used = {id_column, parent_column}
    text_column = _text_column(columns, values, used)
    if text_column is None:
        return None
    used.add(text_column)
    share = linked / replies if replies else 0.0
    reasons = [
        f"column {parent_column!r} holds the id of the message replied to: {linked} of {replies} replies point "
        f"to an id in column {id_column!r}" + (f"; {roots} rows have no parent and start a thread" if roots else ""),
        f"the message text is in {text_column!r}",
    ]
    warnings = []
    if share < 0.9:
        warnings.append(
            f"{replies - linked} replies point to ids that are not in the sample; where their parents are not "
            "in the file either, those threads are cut there (counted in the rejects)"
        )
    columns_map: dict[str, str] = {"id": id_column, "parent": parent_column, "text": text_column}
    role_map: dict[str, str] = {}
    role_column = _role_column(columns, values, used)
    if role_column is not None:
        columns_map["role"], role_map = role_column
        seen = sorted({v.lower() for v in values[role_column[0]] if v})
        reasons.append(f"speaker roles come from {role_column[0]!r} ({', '.join(seen[:6])})")
    elif (author := _author_column(columns, values, used)) is not None:
        columns_map["author"] = author
        reasons.append(
            f"authors are in {author!r}: the author of a thread's first message is the user, every other "
            "author the assistant"
        )
    else:
        reasons.append("no role or author column: turns alternate along a thread, the first message is the user's")
    reasons.append("each path from a thread's first message to a last reply becomes one conversation")
    confidence = (0.9 if named else 0.75) * (1.0 if share >= 0.5 else 0.8)
    recipe = RecipeSection(columns=columns_map, role_map=role_map)  # type: ignore[arg-type]
    return Detection("thread", recipe, confidence, reasons, warnings)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", str(name).lower())


def _parent_name(column: str) -> bool:
    key = _key(column)
    return key in _PARENT_NAMES or (key.startswith(_PARENT_PREFIXES) and not key.endswith(("s", "name", "text")))


def _scalar(value: Any) -> str | None:
    """A cell as id-comparable text (None when empty or not a scalar)."""
    try:
        return norm_id(value, "", None)
    except RecipeError:
        return None


def _best_link(rows: list[dict], columns: list[str], values: dict[str, list[str | None]]):
    """(id column, parent column, linked replies, replies, roots, named) of the best id/parent pair."""
    id_candidates = []
    for column in columns:
        present = [v for v in values[column] if v is not None]
        if len(present) < 0.9 * len(rows) or len(set(present)) < 0.98 * len(present):
            continue  # ids are (nearly) always there and unique
        if any(len(v) > 80 or " " in v for v in present):
            continue
        id_candidates.append((column, set(present)))
    best = None
    for parent_column in columns:
        named = _parent_name(parent_column)
        parents = values[parent_column]
        replies = [v for v in parents if v is not None and v not in SENTINEL_ROOTS]
        roots = len(parents) - len(replies)
        if not replies:
            continue
        for id_column, ids in id_candidates:
            if id_column == parent_column:
                continue
            linked = sum(v in ids for v in replies)
            share = linked / len(replies)
            id_named = _key(id_column) in _ID_NAMES or _key(id_column).endswith("id")
            # Without a telling name, the content must: most replies link inside the sample, and some rows
            # start threads (a column of ids with no empty value is a foreign key, not a reply link).
            if named and linked >= 1 and (share >= 0.2 or linked >= 3):
                score = 2 + share
            elif not named and roots and share >= 0.6 and id_named and not _self_links(rows, id_column, parent_column):
                score = share
            else:
                continue
            if best is None or score > best[0]:
                best = (score, (id_column, parent_column, linked, len(replies), roots, named))
    return None if best is None else best[1]


def _self_links(rows: list[dict], id_column: str, parent_column: str) -> bool:
    """Most rows' 'parent' equals their own id: a copy of the id, not a link."""
    same = sum(_scalar(f.get(id_column)) == _scalar(f.get(parent_column)) for f in rows)
    return same > 0.5 * len(rows)


def _text_column(columns: list[str], values: dict, used: set[str]) -> str | None:
    def score(column: str) -> float:
        texts = [v for v in values[column] if v]
        if len(texts) < 0.5 * len(values[column]):
            return -1.0
        spaced = sum(" " in t for t in texts) / len(texts)
        if spaced < 0.3:
            return -1.0
        mean = sum(len(t) for t in texts) / len(texts)
        if mean < 15:
            return -1.0  # names of a category tree (id, parent_id, name), not messages
        return mean * (2.0 if _key(column) in _TEXT_NAMES else 1.0)

    scored = [(score(c), c) for c in columns if c not in used]
    scored = [(s, c) for s, c in scored if s > 0]
    return max(scored)[1] if scored else None


def _role_column(columns: list[str], values: dict, used: set[str]) -> tuple[str, dict[str, str]] | None:
    from forgellm.data.read.roles import BUILTIN_ROLES

    for column in columns:
        if column in used:
            continue
        present = [v.lower() for v in values[column] if v]
        distinct = set(present)
        if len(present) < 0.9 * len(values[column]) or not 2 <= len(distinct) <= 6:
            continue
        known = {v: BUILTIN_ROLES.get(v) or _EXTRA_ROLES.get(v) for v in distinct}
        if not all(known.values()) or not {"user", "assistant"} <= set(known.values()):
            continue
        if _key(column) not in _ROLE_NAMES and len(present) < 10:
            continue  # two role-like values in a handful of rows of an unnamed column: not enough
        return column, {v: r for v, r in known.items() if v in _EXTRA_ROLES}  # type: ignore[misc]
    return None


def _author_column(columns: list[str], values: dict, used: set[str]) -> str | None:
    for column in columns:
        if column in used or _key(column) not in _AUTHOR_NAMES:
            continue
        present = [v for v in values[column] if v]
        if len(present) >= 0.5 * len(values[column]) and all(len(v) <= 80 for v in present):
            return column
    return None
