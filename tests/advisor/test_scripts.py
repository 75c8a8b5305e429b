"""`forge prepare --script`: advisor script -> saved for the user -> sandboxed run -> validated output."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from templates_support import make_tokenizer
from typer.testing import CliRunner

from advisor.servers import Reply, openai_server
from forgellm.advisor import sandbox
from forgellm.advisor.sandbox import SandboxLimits
from forgellm.advisor.schemas import ScriptProposal, ScriptRequest
from forgellm.advisor.scripts import conversation_of, run_advisor_script
from forgellm.cli.main import app
from forgellm.config.io import load_config, save_config
from forgellm.config.schema import AdvisorSection, ForgeConfig
from forgellm.errors import ForgeError

HAS_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (`bwrap`) is not installed")
LIMITS = SandboxLimits(cpu_seconds=5, wall_seconds=20, memory_bytes=512 * 1024**2, max_processes=16)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONVERT = """
    import csv, json
    with open("tickets.csv", newline="") as f, open("output.jsonl", "w") as out:
        for row in csv.DictReader(f):
            turns = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
            out.write(json.dumps({"messages": turns}) + "\\n")
"""


class FixedAdvisor:
    """An Advisor that answers every script request with the same code, and remembers the request."""

    name = "fixed"

    def __init__(self, code: str) -> None:
        self.code = textwrap.dedent(code)
        self.notes: list[str] = []
        self.requests: list[ScriptRequest] = []

    def write_script(self, request: ScriptRequest) -> ScriptProposal:
        self.requests.append(request)
        return ScriptProposal(code=self.code, explanation="Pairs each question with its answer.")

    def understand_data(self, request):
        raise NotImplementedError

    def propose_plan(self, request):
        raise NotImplementedError

    def diagnose(self, request):
        raise NotImplementedError


@pytest.fixture
def tickets(tmp_path) -> Path:
    rows = [f"Question {i}?,Answer {i}." for i in range(12)]
    path = tmp_path / "tickets.csv"
    path.write_text("question,answer\n" + "\n".join(rows) + "\nMail jane.doe@example.com please,Done.\n")
    return path


def run(project: Path, data: Path, code: str, **kwargs):
    # Where bubblewrap is missing, the same checks run unsandboxed (the flag says so explicitly).
    kwargs.setdefault("allow_unsandboxed", not HAS_BWRAP)
    return run_advisor_script(project, data, "Turn each row into a chat", FixedAdvisor(code), limits=LIMITS, **kwargs)


def test_script_output_is_validated_and_published(tmp_path, tickets):
    advisor = FixedAdvisor(CONVERT)
    project = tmp_path / "bot"
    result = run_advisor_script(
        project, tickets, "Turn each row into a chat", advisor, limits=LIMITS, allow_unsandboxed=not HAS_BWRAP
    )
    assert result.output_path == project / "data" / "scripted" / "tickets.jsonl"
    lines = [json.loads(line) for line in result.output_path.read_text().splitlines()]
    assert len(lines) == result.rows_written == 13 and result.invalid_lines == 0
    assert lines[0] == {
        "messages": [{"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": "Answer 0."}]
    }
    # The user can read exactly what ran, and what it was asked to do.
    assert result.script_path.parent == project / ".forge" / "scripts"
    assert result.script_path.read_text() == advisor.code
    about = json.loads(result.script_path.with_suffix(".json").read_text())
    assert about["instructions"] == "Turn each row into a chat" and about["advisor"] == "fixed"
    assert list((project / ".forge" / "scripts" / "runs").iterdir()) == []  # the working folder is gone
    assert [p.name for p in result.output_path.parent.iterdir()] == ["tickets.jsonl"]  # no partial file left


@pytest.mark.slow  # a Docker engine and image (shared with the other Docker tests)
def test_the_docker_sandbox_end_to_end(tmp_path, tickets, docker_engine):
    """`advisor.sandbox: docker` with a real engine: output published; network and links refused."""
    result = run(tmp_path / "bot", tickets, CONVERT, runtime="docker", allow_unsandboxed=False)
    assert result.sandbox.runtime == "docker" and result.rows_written == 13 and result.invalid_lines == 0
    with pytest.raises(ForgeError, match="it tried to use the network"):
        run(tmp_path / "bot", tickets, "import socket\nsocket.create_connection(('1.1.1.1', 443))\n", runtime="docker")
    with pytest.raises(ForgeError, match="a link instead"):
        run(tmp_path / "bot", tickets, "import os\nos.symlink('/etc/passwd', 'output.jsonl')\n", runtime="docker")


def test_the_advisor_sees_a_masked_sample_not_the_file(tmp_path, tickets):
    advisor = FixedAdvisor(CONVERT)
    run_advisor_script(tmp_path / "bot", tickets, "chats", advisor, limits=LIMITS, allow_unsandboxed=not HAS_BWRAP)
    request = advisor.requests[0]
    assert request.input_name == "tickets.csv" and request.kind == "csv" and request.output_name == "output.jsonl"
    assert 3 <= len(request.rows) < 13
    assert "jane.doe@example.com" not in json.dumps(request.rows)


def test_a_few_invalid_lines_are_counted_and_skipped(tmp_path, tickets):
    code = CONVERT + '    with open("output.jsonl", "a") as extra:\n        extra.write("not json\\n")\n'
    result = run(tmp_path / "bot", tickets, code)
    assert result.rows_written == 13 and result.invalid_lines == 1
    assert result.problems == ["line 14: not JSON (Expecting value)"]


def test_mostly_invalid_output_is_refused_and_nothing_published(tmp_path, tickets):
    code = """
        import json
        good = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        with open("output.jsonl", "w") as out:
            out.write(json.dumps({"messages": good}) + "\\n")
            out.write(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\\n")
            out.write(json.dumps({"text": "no messages"}) + "\\n")
    """
    project = tmp_path / "bot"
    with pytest.raises(ForgeError) as info:
        run(project, tickets, code)
    assert "2 invalid lines out of 3" in info.value.message
    assert info.value.details == [
        "line 2: needs at least one user and one assistant message",
        'line 3: not an object with a "messages" list',
    ]
    assert ".forge/scripts/" in info.value.fix
    assert list((project / "data" / "scripted").iterdir()) == []


def test_no_output_shows_the_scripts_error(tmp_path, tickets):
    code = "import sys\nprint('cannot find the column Body', file=sys.stderr)\nsys.exit(3)\n"
    with pytest.raises(ForgeError) as info:
        run(tmp_path / "bot", tickets, code)
    assert info.value.message == "The advisor's script failed (exit status 3)."
    assert info.value.details == ["stderr: cannot find the column Body"]


def test_a_script_that_writes_nothing_is_an_error(tmp_path, tickets):
    with pytest.raises(ForgeError, match="wrote no output.jsonl"):
        run(tmp_path / "bot", tickets, "print('done')\n")


@needs_bwrap
def test_a_hostile_script_is_stopped_with_its_reason(tmp_path, tickets):
    code = "import socket\nsocket.create_connection(('1.1.1.1', 443), timeout=3)\n"
    with pytest.raises(ForgeError) as info:
        run(tmp_path / "bot", tickets, code)
    assert info.value.message == (
        "The advisor's script was stopped: it tried to use the network, which the sandbox blocks."
    )


@needs_bwrap
def test_an_output_link_is_not_followed(tmp_path, tickets):
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    with pytest.raises(ForgeError, match="a link instead"):
        run(tmp_path / "bot", tickets, f"import os\nos.symlink({str(secret)!r}, 'output.jsonl')\n")


def test_no_sandbox_refuses_before_asking_the_advisor(tmp_path, tickets, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    advisor = FixedAdvisor(CONVERT)
    with pytest.raises(ForgeError, match="no sandbox is available"):
        run_advisor_script(tmp_path / "bot", tickets, "chats", advisor)
    assert advisor.requests == []  # nothing was sent anywhere


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', ""),
        ("[1, 2]", 'not an object with a "messages" list'),
        ('{"messages": [{"role": "bot", "content": "q"}]}', "message 1 has no role among system, user, assistant"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}', "message 2 has"),
        ('{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}', "needs at least"),
        # what prepare refuses is refused here too (the same recipe code)
        ('{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}, '
         '{"role": "assistant", "content": "b"}]}', "the conversation starts with an assistant turn"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, '
         '{"role": "system", "content": "s"}, {"role": "user", "content": "q2"}, {"role": "assistant", '
         '"content": "b"}]}', "turn 2 is a system turn in the middle"),
    ],
)
def test_conversation_of(line, why):
    messages, reason = conversation_of(line)
    assert (messages is not None) == (why == "")
    assert reason.startswith(why)


# ---------------------------------------------------------------- the command


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def project(tmp_path) -> Path:
    """A project whose model is a tiny tokenizer-only folder: all that `prepare` loads."""
    model = tmp_path / "tiny-model"
    make_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>", chat_template=CHATML).save_pretrained(model)
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    root = tmp_path / "bot"
    root.mkdir()
    save_config(ForgeConfig.model_validate({"model": {"ref": str(model), "max_length": 256}}), root / "forge.yaml")
    return root


def _use_advisor(project: Path, **advisor) -> None:
    config = load_config(project, environ={}).config
    config.advisor = AdvisorSection(**advisor)
    save_config(config, project / "forge.yaml")


def test_cli_refuses_without_a_sandbox(project, tickets, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    result = invoke("prepare", str(tickets), "-C", str(project), "--script", "Turn each row into a chat")
    assert result.exit_code == 1
    assert "Error [sandbox-unavailable]:" in result.output and "no sandbox is available" in result.output
    assert "Fix:" in result.output and "--allow-unsandboxed" in result.output


def test_cli_rules_advisor_cannot_write_scripts(project, tickets):
    result = invoke("prepare", str(tickets), "-C", str(project), "--script", "chats", "--allow-unsandboxed")
    assert result.exit_code == 1
    assert "The offline rules advisor cannot write scripts." in result.output and "Fix:" in result.output


@pytest.mark.parametrize("prepared_before", [False, True])
def test_cli_script_then_prepare_end_to_end(project, tickets, prepared_before):
    if prepared_before:  # forge.yaml already holds the recipe of the raw CSV (question/answer columns)
        from forgellm.data.prepare.detect import detect_recipe
        from forgellm.data.prepare.run import load_project_config
        from forgellm.project import ProjectLayout

        detect_recipe(ProjectLayout(project), tickets, load_project_config(project))
        assert load_config(project).config.data.format != "messages"
    proposal = ScriptProposal(code=textwrap.dedent(CONVERT), explanation="Pairs questions and answers.")
    with openai_server([Reply.json(proposal)]) as server:
        _use_advisor(project, provider="openai", model="local", base_url=server.url)
        result = invoke(
            "prepare", str(tickets), "-C", str(project), "--script", "chats", "--json",
            *(() if HAS_BWRAP else ("--allow-unsandboxed",)),
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["script"]["rows_written"] == 13 and report["script"]["runtime"] in ("bubblewrap", "unsandboxed")
    assert Path(report["script"]["script_path"]).read_text() == proposal.code
    assert report["stats"]["rows_read"] == 13
    assert sum(split["examples"] for split in report["stats"]["splits"].values()) == 13
    assert load_config(project).config.data.format == "messages"
    assert any("detected again" in w for w in report["script"]["warnings"]) == prepared_before
    assert report["script"]["notes"] == ["Sent to local (openai): the instructions and 5 records of tickets.csv."]
