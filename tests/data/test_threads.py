"""Reply threads linked by ids: linking into conversations, bad links, detection, and a whole `prepare`."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.config.schema import RecipeSection
from forgellm.data.prepare.run import prepare_dataset
from forgellm.data.read.readers import open_dataset
from forgellm.data.read.records import BadRow, Record, reason_kind
from forgellm.data.read.thread_detection import detect_thread
from forgellm.data.read.threads import link_sample, link_threads

OASST = RecipeSection(columns={"id": "message_id", "parent": "parent_id", "text": "text", "role": "role"})
# An OpenAssistant-like tree: two prompts, the first with two answers, one of which is followed up.
OASST_ROWS = [
    {"message_id": "m1", "parent_id": "", "role": "prompter", "text": "How do I bake bread?"},
    {"message_id": "m2", "parent_id": "m1", "role": "assistant", "text": "Mix flour, water and yeast."},
    {"message_id": "m3", "parent_id": "m1", "role": "assistant", "text": "Buy it at a bakery."},
    {"message_id": "m4", "parent_id": "m2", "role": "prompter", "text": "How long does it rise?"},
    {"message_id": "m5", "parent_id": "m4", "role": "assistant", "text": "About an hour."},
    {"message_id": "q1", "parent_id": "", "role": "prompter", "text": "What is rye?"},
    {"message_id": "q2", "parent_id": "q1", "role": "assistant", "text": "A cereal grain."},
]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


OASST_CONVERSATIONS = [  # (leaf line, thread, messages) in the order of the leaves in the file
    (4, "m1", [user("How do I bake bread?"), bot("Buy it at a bakery.")]),
    (6, "m1", [user("How do I bake bread?"), bot("Mix flour, water and yeast."), user("How long does it rise?"),
               bot("About an hour.")]),
    (8, "q1", [user("What is rye?"), bot("A cereal grain.")]),
]  # fmt: skip


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_items(path: Path) -> list[Record | BadRow]:
    return [item for batch in open_dataset(path).batches() for item in batch]


def conversations(items) -> list[tuple[int, str, list[dict]]]:
    return [(i.line, i.fields["thread"], i.fields["messages"]) for i in items if isinstance(i, Record)]


def rejects(items) -> dict[int, str]:
    return {i.line: i.reason for i in items if isinstance(i, BadRow)}


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_oasst_tree_becomes_one_conversation_per_leaf(tmp_path, kind):
    rows = [dict(r) for r in OASST_ROWS]
    if kind == "jsonl":  # JSON exports write a root's parent as null
        for row in rows:
            row["parent_id"] = row["parent_id"] or None
        path = write_jsonl(tmp_path / "tree.jsonl", rows)
        shift = 1  # no header line
    else:
        path = write_csv(tmp_path / "tree.csv", rows)
        shift = 0
    linked = link_threads(read_items(path), OASST)
    assert linked.count == 3
    items = list(linked)
    expected = [(line - shift, thread, messages) for line, thread, messages in OASST_CONVERSATIONS]
    assert conversations(items) == expected and not rejects(items)


def test_replies_before_their_parents_and_numeric_ids(tmp_path):
    # pandas writes an id column with gaps as floats: 2.0 is the id 2; a root's parent may be NaN or 0.
    rows = [
        {"id": 3, "parent": 2.0, "role": "user", "text": "and then?"},
        {"id": 2, "parent": "1", "role": "assistant", "text": "hello"},
        {"id": 1, "parent": float("nan"), "role": "user", "text": "hi"},
        {"id": 4, "parent": "0", "role": "user", "text": "another start"},
        {"id": 5, "parent": "4.0", "role": "bot", "text": "another reply"},
    ]
    recipe = RecipeSection(columns={"id": "id", "parent": "parent", "text": "text", "role": "role"})
    items = list(link_threads([Record(n, r) for n, r in enumerate(rows, 1)], recipe))
    assert conversations(items) == [
        (1, "1", [user("hi"), bot("hello"), user("and then?")]),  # the recipe drops the trailing user turn later
        (5, "4", [user("another start"), bot("another reply")]),
    ]


def test_tweet_export_first_author_is_the_user(tmp_path):
    rows = [
        {"id": "100", "in_reply_to_status_id": "", "user": "ana", "text": "My order never arrived"},
        {"id": "101", "in_reply_to_status_id": "100", "user": "ShopHelp", "text": "Sorry! Can you DM us?"},
        {"id": "102", "in_reply_to_status_id": "101", "user": "ana", "text": "Done, thanks"},
        {"id": "103", "in_reply_to_status_id": "102", "user": "ShopHelp", "text": "Refund sent."},
        {"id": "104", "in_reply_to_status_id": "101", "user": "bob", "text": "Same problem here"},
    ]
    path = write_csv(tmp_path / "tweets.csv", rows)
    recipe = RecipeSection(columns={"id": "id", "parent": "in_reply_to_status_id", "text": "text", "author": "user"})
    items = list(link_threads(read_items(path), recipe))
    assert conversations(items) == [
        (5, "100", [user("My order never arrived"), bot("Sorry! Can you DM us?"), user("Done, thanks"),
                    bot("Refund sent.")]),
        # bob is not the thread's first author: his reply is on the assistant's side, merged by the recipe
        (6, "100", [user("My order never arrived"), bot("Sorry! Can you DM us?"), bot("Same problem here")]),
    ]  # fmt: skip
    # Without roles or authors, turns alternate along the thread.
    plain = RecipeSection(columns={"id": "id", "parent": "in_reply_to_status_id", "text": "text"})
    items = list(link_threads(read_items(path), plain))
    assert [m["role"] for m in conversations(items)[1][2]] == ["user", "assistant", "user"]


def test_missing_parent_cuts_the_subtree_into_the_rejects():
    rows = [
        *OASST_ROWS,
        {"message_id": "x1", "parent_id": "gone", "role": "assistant", "text": "an answer to a lost prompt"},
        {"message_id": "x2", "parent_id": "x1", "role": "prompter", "text": "follow-up"},
        {"message_id": "x3", "parent_id": "x2", "role": "assistant", "text": "reply"},
    ]
    items = list(link_threads([Record(n, r) for n, r in enumerate(rows, 1)], OASST))
    assert len(conversations(items)) == 3
    assert rejects(items) == {
        8: "parent id 'gone' not found in the file",
        9: "cut from its thread at line 8: parent id 'gone' not found in the file",
        10: "cut from its thread at line 8: parent id 'gone' not found in the file",
    }
    # UUID-like ids do not make a reason kind of their own each (stats count reasons by kind).
    assert reason_kind("parent id 'a3f9-1c' not found in the file") == reason_kind(rejects(items)[8])


def test_a_cycle_is_rejected_with_its_ids_and_what_hangs_below_it():
    rows = [
        *OASST_ROWS,
        {"message_id": "c1", "parent_id": "c3", "role": "prompter", "text": "one"},
        {"message_id": "c2", "parent_id": "c1", "role": "assistant", "text": "two"},
        {"message_id": "c3", "parent_id": "c2", "role": "prompter", "text": "three"},
        {"message_id": "c4", "parent_id": "c2", "role": "prompter", "text": "below the loop"},
        {"message_id": "s1", "parent_id": "s1", "role": "prompter", "text": "replies to itself"},
    ]
    items = list(link_threads([Record(n, r) for n, r in enumerate(rows, 1)], OASST))
    assert len(conversations(items)) == 3
    reasons = rejects(items)
    assert reasons[8] == reasons[9] == reasons[10] == "reply cycle through ids 'c1' -> 'c3' -> 'c2' -> 'c1'"
    assert reasons[11].startswith("cut from its thread at line 9: reply cycle")
    assert reasons[12] == "reply cycle through ids 's1' -> 's1'"


def test_duplicate_id_and_unknown_role_are_rejected_naming_the_fix():
    rows = [
        *OASST_ROWS,
        {"message_id": "m2", "parent_id": "m1", "role": "assistant", "text": "a second m2"},
        {"message_id": "w1", "parent_id": "q2", "role": "wizard", "text": "magic"},
        {"message_id": "w2", "parent_id": "w1", "role": "prompter", "text": "under the wizard"},
    ]
    items = list(link_threads([Record(n, r) for n, r in enumerate(rows, 1)], OASST))
    # The first m2 keeps its replies; q2 is a leaf again once the reply under it is cut.
    assert [line for line, _, _ in conversations(items)] == [3, 5, 7]
    reasons = rejects(items)
    assert reasons[8] == "duplicate id 'm2' (first at line 2); the later row is left out"
    assert "unknown role 'wizard'" in reasons[9] and "data.recipe.role_map" in reasons[9]
    assert reasons[10].startswith("cut from its thread at line 9: unknown role")
    # role_map fixes it; `drop` leaves the message out and keeps the replies below it.
    mapped = OASST.model_copy(update={"role_map": {"wizard": "drop"}})
    items = list(link_threads([Record(n, r) for n, r in enumerate(rows, 1)], mapped))
    last = (10, "q1", [user("What is rye?"), bot("A cereal grain."), user("under the wizard")])
    assert conversations(items)[-1] == last
    assert [line for line, _, _ in conversations(items)] == [3, 5, 10]


def test_a_message_whose_text_is_not_text_is_rejected():
    rows = [*OASST_ROWS[5:], {"message_id": "q3", "parent_id": "q1", "role": "assistant", "text": {"html": "<b>"}}]
    items = list(link_threads([Record(n, r) for n, r in enumerate(rows, 1)], OASST))
    assert rejects(items) == {3: "column 'text' (text) holds dict, not text"} and len(conversations(items)) == 1


def test_wrong_parent_column_is_named_not_silently_a_forest_of_roots():
    recipe = RecipeSection(columns={"id": "message_id", "parent": "reply_to", "text": "text"})
    items = list(link_threads([Record(n, r) for n, r in enumerate(OASST_ROWS, 1)], recipe))
    assert not conversations(items)
    assert all("'reply_to' (parent) is missing in every row" in reason for reason in rejects(items).values())


def test_link_sample_keeps_the_conversations_of_a_cut_sample():
    sample = [Record(n, r) for n, r in enumerate(OASST_ROWS[1:], 2)]  # the first root is outside the sample
    assert [r.line for r in link_sample(sample, OASST)] == [7]


# -- detection ---------------------------------------------------------------------------------
def _forum(n_threads: int = 30) -> list[Record]:
    """A forum export: each thread a question, two answers and a follow-up; some parents cut by the sample."""
    rows, line = [], 1
    for t in range(n_threads):
        base = t * 10
        rows += [
            {"post_id": base + 1, "in_reply_to": None, "author": f"asker{t}", "body": f"How do I fix error {t}?"},
            {"post_id": base + 2, "in_reply_to": base + 1, "author": "helper", "body": f"Restart the service {t}."},
            {"post_id": base + 3, "in_reply_to": base + 1, "author": "guru", "body": "Check the logs first please."},
            {"post_id": base + 4, "in_reply_to": base + 2, "author": f"asker{t}", "body": "That worked, thanks a lot"},
        ]
    records = []
    for row in rows:
        line += 1
        records.append(Record(line, row))
    return records


def test_detect_thread_on_an_oasst_sample_with_roles():
    sample = [Record(n, r) for n, r in enumerate(OASST_ROWS, 2)]
    found = detect_thread(sample)
    assert found is not None and found.format == "thread"
    assert found.recipe.columns == {"id": "message_id", "parent": "parent_id", "text": "text", "role": "role"}
    assert found.confidence >= 0.8 and any("'parent_id' holds the id" in r for r in found.reasons)
    assert link_sample(sample, found.recipe)  # the detected recipe links the sample


def test_detect_thread_on_a_forum_export_with_authors_and_parents_outside_the_sample():
    sample = _forum()[2:]  # the first thread's root is cut off by the sample
    found = detect_thread(sample)
    assert found is not None
    assert found.recipe.columns == {"id": "post_id", "parent": "in_reply_to", "text": "body", "author": "author"}
    assert any("first message is the user" in r for r in found.reasons)
    assert len(link_sample(sample, found.recipe)) == 29 * 2


def test_detect_thread_by_content_without_a_parent_name():
    rows = [
        {"id": str(n), "antwort_auf": "" if n % 3 == 1 else str(n - 1), "nachricht": f"Nachricht Nummer {n} hier"}
        for n in range(1, 31)
    ]
    found = detect_thread([Record(n, r) for n, r in enumerate(rows, 2)])
    assert found is not None and found.recipe.columns["parent"] == "antwort_auf"
    rows = [{"id": r["id"], "zu": r["antwort_auf"], "nachricht": r["nachricht"]} for r in rows]  # no name hint
    found = detect_thread([Record(n, r) for n, r in enumerate(rows, 2)])
    assert found is not None and found.recipe.columns["parent"] == "zu" and found.confidence < 0.8


def _tweet(tweet_id: int, author: str, text: str, children: str, parent: int | None) -> dict:
    return {
        "tweet_id": tweet_id,
        "author_id": author,
        "inbound": author != "AcmeCare",
        "created_at": "Tue Oct 31 22:10:47 +0000 2017",
        "text": text,
        "response_tweet_id": children,
        "in_response_to_tweet_id": parent,
    }


def test_detect_thread_on_a_customer_support_tweet_export():
    # The shape of Twitter customer-support exports: child ids in one column, the parent in another.
    rows = []
    for t in range(20):
        base = 1000 + t * 3
        rows += [
            _tweet(base, f"cust{t}", f"@AcmeCare my router {t} keeps dropping", f"{base + 1},{base + 2}", None),
            _tweet(base + 1, "AcmeCare", f"@cust{t} Sorry to hear that, please DM us", "", base),
            _tweet(base + 2, "AcmeCare", f"@cust{t} We reset your line {t}.", "", base),
        ]
    found = detect_thread([Record(n, r) for n, r in enumerate(rows, 2)])
    assert found is not None
    assert found.recipe.columns == {
        "id": "tweet_id", "parent": "in_response_to_tweet_id", "text": "text", "author": "author_id",
    }  # fmt: skip
    linked = link_sample([Record(n, r) for n, r in enumerate(rows, 2)], found.recipe)
    assert len(linked) == 40 and [m["role"] for m in linked[0].fields["messages"]] == ["user", "assistant"]


def test_detect_thread_on_a_stack_exchange_posts_dump():
    rows = []
    for q in range(15):
        question = f"<p>When I run step {q} it fails with an error.</p>"
        rows.append({"Id": 10 * q + 1, "ParentId": "", "OwnerUserId": 500 + q, "Title": f"Why {q}?", "Body": question})
        for a in (2, 3):
            answer = f"<p>Answer {a}: update the package and try step {q} again.</p>"
            rows.append({"Id": 10 * q + a, "ParentId": 10 * q + 1, "OwnerUserId": 900 + a, "Title": "", "Body": answer})
    found = detect_thread([Record(n, r) for n, r in enumerate(rows, 2)])
    assert found is not None
    assert found.recipe.columns == {"id": "Id", "parent": "ParentId", "text": "Body", "author": "OwnerUserId"}


@pytest.mark.parametrize(
    "rows",
    [
        # a plain Q/A file with an id column: no link between rows
        [{"id": n, "question": f"What is item {n}?", "answer": f"Item {n} is a thing."} for n in range(1, 40)],
        # a category id that happens to hit the id range, with no empty value: a foreign key, not a reply
        [{"id": n, "category_id": n % 5 + 1, "text": f"ticket text number {n}"} for n in range(1, 40)],
        # a "parent" column that names companies, not messages
        [{"id": n, "parent": "Acme Holdings", "text": f"annual report {n} text"} for n in range(1, 40)],
        # a category tree: linked by parent ids, but its names are not messages
        [{"id": n, "parent_id": "" if n < 4 else n // 4, "name": f"Garden Tools {n}"} for n in range(1, 40)],
    ],
    ids=["qa-with-id", "foreign-key", "parent-company", "category-tree"],
)
def test_detect_thread_rejects_files_that_are_not_threads(rows):
    assert detect_thread([Record(n, r) for n, r in enumerate(rows, 2)]) is None


# -- a whole preparation -----------------------------------------------------------------------
def test_prepare_a_thread_file_keeps_threads_in_one_split_and_rejects_cut_ones(make_project, tmp_path):
    rows = []
    for t in range(80):
        rows += [
            {"message_id": f"t{t}", "parent_id": "", "role": "prompter", "text": f"Question number {t}?"},
            {"message_id": f"t{t}a", "parent_id": f"t{t}", "role": "assistant", "text": f"First answer {t}."},
            {"message_id": f"t{t}b", "parent_id": f"t{t}", "role": "assistant", "text": f"Second answer {t}."},
        ]
    rows += [
        {"message_id": "lost", "parent_id": "nowhere", "role": "assistant", "text": "orphan"},
        {"message_id": "loop1", "parent_id": "loop2", "role": "prompter", "text": "loop one"},
        {"message_id": "loop2", "parent_id": "loop1", "role": "assistant", "text": "loop two"},
    ]
    path = write_csv(tmp_path / "threads.csv", rows)
    project = make_project(data={"format": "thread", "recipe": OASST.model_dump(exclude_defaults=True)})
    result = prepare_dataset(*staged(project), path, chunk_rows=7)  # threads straddle chunks
    out = result.output_dir
    split_of: dict[str, set[str]] = defaultdict(set)
    kept = 0
    for split in ("train", "val", "test"):
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            kept += 1
            question = row["messages"][0]["content"]
            split_of[question].add(split)
            assert row["messages"][1]["content"].split()[-1].rstrip(".") == question.split()[-1].rstrip("?")
    assert kept == 160 and all(len(splits) == 1 for splits in split_of.values())
    assert len({next(iter(s)) for s in split_of.values()}) > 1  # threads do spread over the splits
    rejected = {r["line"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}
    assert rejected == {
        242: "parent id 'nowhere' not found in the file",
        243: "reply cycle through ids 'loop1' -> 'loop2' -> 'loop1'",
        244: "reply cycle through ids 'loop1' -> 'loop2' -> 'loop1'",
    }
    stats = result.stats
    assert stats.rows_read == 163 and stats.rejected == 3  # conversations and rejects
    assert stats.rejected_by_reason == {
        "parent id '…' not found in the file": 1,
        "reply cycle through ids '…'": 2,
    }


def test_an_interrupted_thread_preparation_resumes_to_the_same_output(make_project, tmp_path, monkeypatch):
    import forgellm.data.prepare.run as prepare_module

    rows = [dict(r) for r in OASST_ROWS * 1]
    for t in range(40):
        rows += [
            {"message_id": f"r{t}", "parent_id": "", "role": "prompter", "text": f"Prompt {t}?"},
            {"message_id": f"r{t}a", "parent_id": f"r{t}", "role": "assistant", "text": f"Reply {t}."},
            {"message_id": f"r{t}b", "parent_id": f"r{t}a", "role": "prompter", "text": f"More {t}?"},
            {"message_id": f"r{t}c", "parent_id": f"r{t}b", "role": "assistant", "text": f"Yes {t}."},
            {"message_id": f"r{t}d", "parent_id": f"r{t}", "role": "assistant", "text": f"Other {t}."},
        ]
    rows.insert(30, {"message_id": "orphan", "parent_id": "missing", "role": "prompter", "text": "cut"})
    path = write_csv(tmp_path / "threads.csv", rows)
    recipe = {"data": {"format": "thread", "recipe": OASST.model_dump(exclude_defaults=True)}}
    reference = prepare_dataset(*staged(make_project("reference", **recipe)), path, chunk_rows=6).output_dir
    real_write = prepare_module.write_chunk

    def interrupted(work, number, *args):
        if number == 5:
            raise KeyboardInterrupt
        return real_write(work, number, *args)

    project = make_project("interrupted", **recipe)
    monkeypatch.setattr(prepare_module, "write_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(*staged(project), path, chunk_rows=6)
    monkeypatch.setattr(prepare_module, "write_chunk", real_write)
    result = prepare_dataset(*staged(project), path, chunk_rows=6)
    assert result.resumed_chunks == 5
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl"):
        assert (result.output_dir / name).read_bytes() == (reference / name).read_bytes(), name
    assert "parent id 'missing'" in (reference / "rejects.jsonl").read_text()
