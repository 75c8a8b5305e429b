"""Cleaning steps, PII detection/masking, placeholders and encoding-health helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forgellm.data.prepare.cleaning import (
    clean_text,
    find_pii,
    find_placeholders,
    luhn_valid,
    mask_pii,
)
from forgellm.data.read.damage import has_control_chars, mojibake_score

# ------------------------------------------------------------------------------------------ cleaning steps


def test_unicode_nfc_composes():
    assert clean_text("cafe\u0301", ["unicode_nfc"]) == "caf\u00e9"


def test_strip_whitespace_per_line_and_outer():
    assert clean_text("  \n  hello  \r\nworld\t \r\n\n", ["strip_whitespace"]) == "hello\nworld"
    assert clean_text("    indented code\n", ["strip_whitespace"]) == "indented code"  # outer strip only
    assert clean_text("a\n    b  ", ["strip_whitespace"]) == "a\n    b"  # inner indentation kept


def test_collapse_spaces_keeps_indentation_and_newlines():
    text = "    if x:   return  1\n\ta \t b\n\nc\u00a0\u00a0d"
    assert clean_text(text, ["collapse_spaces"]) == "    if x: return 1\n\ta b\n\nc d"
    assert clean_text("日本語\u3000です", ["collapse_spaces"]) == "日本語\u3000です"  # a single wide space stays


def test_strip_html_keeps_text_and_drops_scripts():
    html = "<div><p>Hello &amp; <b>world</b>&nbsp;!</p><script>alert(1)</script><style>p{}</style>Bye<br>now</div>"
    assert clean_text(html, ["strip_html", "strip_whitespace"]) == "Hello & world\u00a0!\nBye\nnow"


def test_strip_html_leaves_plain_text_alone():
    assert clean_text("a < b and c > d, 5 > 3", ["strip_html"]) == "a < b and c > d, 5 > 3"


def test_clean_steps_run_in_order_and_unknown_step_fails():
    assert clean_text("  <p>x   y</p>  ", ["strip_html", "collapse_spaces", "strip_whitespace"]) == "x y"
    with pytest.raises(ValueError, match="unknown cleaning step 'lowercase'"):
        clean_text("x", ["lowercase"])


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
_STEPS = st.lists(st.sampled_from(["unicode_nfc", "strip_whitespace", "collapse_spaces"]), max_size=4)


_WHITESPACE_HEAVY = st.text(
    alphabet=st.sampled_from(list(" \t\r\n\x0b\x0c\x1c\x85\xa0\u2028\u3000ab")) | st.characters(), max_size=80
)


@settings(max_examples=500, deadline=None)
@given(text=_WHITESPACE_HEAVY)
def test_strip_whitespace_equals_its_line_by_line_definition(text):
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert clean_text(text, ["strip_whitespace"]) == "\n".join(line.rstrip() for line in lines).strip()


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, steps=_STEPS)
def test_clean_text_is_idempotent(text, steps):
    once = clean_text(text, steps)
    assert clean_text(once, steps) == once


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<&"), max_size=200))
def test_strip_html_is_idempotent_on_text_without_markup(text):
    steps = ["strip_html", "unicode_nfc", "strip_whitespace", "collapse_spaces"]
    once = clean_text(text, steps)
    assert clean_text(once, steps) == once


# ------------------------------------------------------------------------------------------ PII


def _found(text: str) -> list[tuple[str, str]]:
    return [(h.kind, text[h.start : h.end]) for h in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("mail me at john.doe+tag@example.co.uk today", "email", "john.doe+tag@example.co.uk"),
        ("call +1 (415) 555-2671 now", "phone", "+1 (415) 555-2671"),
        ("call 415-555-2671 now", "phone", "415-555-2671"),
        ("call (415) 555 2671", "phone", "(415) 555 2671"),
        ("call 415.555.2671", "phone", "415.555.2671"),
        ("london +44 20 7946 0958", "phone", "+44 20 7946 0958"),
        ("tokyo +81 3-1234-5678", "phone", "+81 3-1234-5678"),
        ("e164 +14155552671.", "phone", "+14155552671"),
        ("visa 4111 1111 1111 1111", "card", "4111 1111 1111 1111"),
        ("visa 4111-1111-1111-1111", "card", "4111-1111-1111-1111"),
        ("amex 378282246310005", "card", "378282246310005"),
        ("mc 5555555555554444.", "card", "5555555555554444"),
        ("key sk-proj-abcdefghijklmnopqrstuvwxyz123456", "key", "sk-proj-abcdefghijklmnopqrstuvwxyz123456"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "key", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789AB", "key", "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB"),
        ("aws AKIAIOSFODNN7EXAMPLE", "key", "AKIAIOSFODNN7EXAMPLE"),
        ("api_key=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "key", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"),
        ('"token": "dGhpc2lzYXNlY3JldHRva2VuMTIz"', "key", "dGhpc2lzYXNlY3JldHRva2VuMTIz"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc1",
            "key",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc1",
        ),
        ("IBAN GB82 WEST 1234 5698 7654 32", "iban", "GB82 WEST 1234 5698 7654 32"),
        ("IBAN DE89370400440532013000", "iban", "DE89370400440532013000"),
    ],
)
def test_pii_true_positives(text, kind, value):
    assert (kind, value) in _found(text)


@pytest.mark.parametrize(
    "text",
    [
        "how can I cancel purchase 113542617735902?",  # Bitext order id
        "can you help me canceling purchase 00004587345?",
        "First response 2023-06-01 12:15:36, purchased 2021-03-22",  # dates and times
        "dates 03/22/2021 and 22.03.2021, price $1,234,567.89",
        "Your billing zip code is: 71701. 1.8.3 I really",
        "version 1.2.3.4 on 192.168.1.100 port 8080",
        "card 4111111111111112 fails Luhn",
        "a Luhn-valid id that is no card prefix: 1234567812345670",
        "tel 5551234567 without separators is ambiguous with ids",
        'integrity="sha256-p4NxAoJBhIIN+hmNHrzRCf9tD/miZyoHS5obTRR9BMY="',
        "token: abc, password=hunter2, api_key=your_api_key_here",
        "IBAN GB00 WEST 1234 5698 7654 32 with a bad checksum",
        "user@localhost is not an address; neither is @handle",
    ],
)
def test_pii_false_positive_guards(text):
    assert find_pii(text) == []


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4111-1111")


def test_mask_pii_replaces_each_kind():
    text = "Write to a@b.io or call +1 415-555-2671; card 4111 1111 1111 1111; key AKIAIOSFODNN7EXAMPLE."
    assert mask_pii(text) == "Write to [EMAIL] or call [PHONE]; card [CARD]; key [KEY]."
    assert mask_pii("nothing here") == "nothing here"


def test_mask_pii_handles_adjacent_hits():
    # Each masked phone exposes the next one ("0958+44" hides the second "+44" from the lookbehind).
    assert mask_pii("a@b.io" + "+44 20 7946 0958" * 3) == "[EMAIL]" + "[PHONE]" * 3


def test_pii_hits_do_not_overlap_and_are_sorted():
    hits = find_pii("x 4111 1111 1111 1111 y a@b.io +1 415-555-2671")
    assert [h.kind for h in hits] == ["card", "email", "phone"]
    assert all(a.end <= b.start for a, b in zip(hits, hits[1:], strict=False))


_PII_BITS = st.sampled_from(
    [
        "a@b.io",
        "+1 415-555-2671",
        "415-555-2671",
        "+44 20 7946 0958",
        "sk-abcdefghijklmnopqrstuvwxyz",
        "4111 1111 1111 1111",
        "AKIAIOSFODNN7EXAMPLE",
        "token=9f86d081884c7d659a2feaa0c55ad015",
        "DE89370400440532013000",
        "2023-06-01",
        "113542617735902",
    ]
)
_FILLER = st.text(alphabet=" -.+@()0123456789abcXYZ:=\n", max_size=12)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(_PII_BITS, _FILLER), max_size=8))
def test_masked_text_has_no_pii(parts):
    assert find_pii(mask_pii("".join(parts))) == []


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=120))
def test_masked_random_text_has_no_pii(text):
    assert find_pii(mask_pii(text)) == []


# ------------------------------------------------------------------------------------------ placeholders


def test_placeholders_single_and_double():
    text = "Issue with the {product_purchased}. Order {{Order Number}} on {{ Website Name }}."
    found = [(p.kind, p.name) for p in find_placeholders(text)]
    assert found == [
        ("single_brace", "product_purchased"),
        ("double_brace", "Order Number"),
        ("double_brace", "Website Name"),
    ]
    first = find_placeholders(text)[0]
    assert text[first.start : first.end] == "{product_purchased}"


def test_placeholders_ignore_code_and_json():
    assert find_placeholders('{"a": 1} function f() { return x; } {}') == []


# ------------------------------------------------------------------------------------------ encoding health


def test_mojibake_score():
    assert mojibake_score("plain ascii") == 0.0
    assert mojibake_score("Ça va? À bientôt. Grüße, naïve façade") == 0.0
    assert mojibake_score("日本語のテキスト") == 0.0
    assert mojibake_score("cafÃ© itâ€™s") == 1.0
    assert mojibake_score("日本語".encode().decode("cp1252", errors="replace")) > 0.5
    assert mojibake_score("日本語".encode().decode("latin-1")) == 1.0
    assert 0 < mojibake_score("good é text with one \ufffd") < 1


def test_has_control_chars():
    assert has_control_chars("a\x00b")
    assert has_control_chars("bell\x07")
    assert not has_control_chars("tab\tnew\nline\r\n")
    assert not has_control_chars("日本語")
