"""An API key goes only where the user meant it: the provider's own host over https, this machine, or an
address allowed with `forge login --base-url`. Real listeners on a non-loopback address of this machine
stand for a server a shared forge.yaml points at: the key must not arrive there."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from advisor.servers import Reply, fast_retries, gemini_server, non_loopback_address, openai_server  # noqa: F401
from forgellm.advisor.select import make_advisor
from forgellm.cli.main import app
from forgellm.config.key_hosts import allow_origin, key_refusal
from forgellm.config.schema import AdvisorSection
from forgellm.errors import ErrorCode, ForgeError

SECRET = "sk-test-secret-0123456789abcdef"
RECIPE = {
    "format": "qa",
    "task_type": "qa",
    "columns": [{"field": "user", "column": "question"}, {"field": "assistant", "column": "answer"}],
}


def _ask(advisor) -> None:
    from forgellm.advisor.sampling import build_data_request
    from forgellm.data.read.records import Record

    rows = [Record(line=2, fields={"question": "Where is my parcel?", "answer": "It ships in two days."})]
    request = build_data_request(
        rows, file_name="faq.csv", kind="csv", goal="A support bot", hint=None, sample_rows=5, redact_pii=True
    )
    advisor.understand_data(request)


def _everything_sent(server) -> str:
    return "\n".join(f"{r.headers}\n{r.raw_body!r}" for r in server.requests)


@pytest.mark.usefixtures("fast_retries")
def test_a_forge_yaml_url_elsewhere_gets_no_openai_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with openai_server([Reply.json(RECIPE)], host=non_loopback_address()) as server:
        advisor = make_advisor(AdvisorSection(provider="openai", base_url=server.url, model="m"), tmp_path)
        _ask(advisor)
        assert server.requests, "the server was asked (without a key)"
        assert SECRET not in _everything_sent(server)
        assert "authorization" not in server.requests[0].headers
    said = " ".join(advisor.notes)
    assert "did not send your openai API key" in said and "forge login --provider openai --base-url" in said


@pytest.mark.usefixtures("fast_retries")
def test_an_allowed_address_gets_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with openai_server([Reply.json(RECIPE)], host=non_loopback_address()) as server:
        allow_origin("openai", server.url)
        _ask(make_advisor(AdvisorSection(provider="openai", base_url=server.url, model="m"), tmp_path))
        assert server.requests[0].headers.get("authorization") == f"Bearer {SECRET}"


def test_a_gemini_proxy_elsewhere_is_refused_before_anything_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    with gemini_server([Reply.json(RECIPE)], host=non_loopback_address()) as server:
        with pytest.raises(ForgeError) as caught:
            make_advisor(AdvisorSection(provider="gemini", base_url=server.url), tmp_path)
        assert server.requests == []
    assert caught.value.code == ErrorCode.ADVISOR_KEY_WITHHELD
    assert "forge login --provider gemini --base-url" in caught.value.fix


@pytest.mark.usefixtures("fast_retries")
def test_this_machine_gets_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with openai_server([Reply.json(RECIPE)]) as server:  # 127.0.0.1: a local server the user runs
        _ask(make_advisor(AdvisorSection(provider="openai", base_url=server.url, model="m"), tmp_path))
        assert server.requests[0].headers.get("authorization") == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("provider", "url", "allowed"),
    [
        ("openai", None, True),  # the provider's default endpoint
        ("openai", "https://api.openai.com/v1", True),
        ("openai", "http://api.openai.com/v1", False),  # plain http: readable on the way
        ("openai", "https://api.openai.com.evil.example/v1", False),
        ("openai", "https://generativelanguage.googleapis.com", False),  # another provider's host
        ("gemini", "https://generativelanguage.googleapis.com", True),
        ("openai", "http://localhost:8000/v1", True),
        ("openai", "http://[::1]:8000/v1", True),
        ("openai", "http://127.0.0.2:8000/v1", True),
        ("openai", "http://192.0.2.7:8000/v1", False),
    ],
)
def test_where_a_key_may_go(provider, url, allowed):
    assert (key_refusal(provider, url) is None) is allowed


def test_login_with_a_base_url_allows_that_server_only(tmp_path):
    result = CliRunner().invoke(
        app, ["login", "--provider", "openai", "--base-url", "https://llm.example.org:8443/v1"], input=f"{SECRET}\n"
    )
    assert result.exit_code == 0, result.output
    assert "https://llm.example.org:8443" in result.output and SECRET not in result.output
    assert key_refusal("openai", "https://llm.example.org:8443/other/path") is None
    assert key_refusal("openai", "https://llm.example.org/v1") is not None  # another port: another server
    assert key_refusal("gemini", "https://llm.example.org:8443/v1") is not None  # the openai key's allowance


def test_init_with_a_key_and_a_base_url_allows_that_server(tmp_path):
    """`forge init --advisor openai --base-url URL --api-key KEY` names both at once: the key may go there."""
    result = CliRunner().invoke(
        app,
        ["init", str(tmp_path / "bot"), "--advisor", "openai", "--base-url", "http://192.0.2.7:8000/v1",
         "--api-key", SECRET],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert key_refusal("openai", "http://192.0.2.7:8000/v1") is None
    assert key_refusal("openai", "http://192.0.2.8:8000/v1") is not None
