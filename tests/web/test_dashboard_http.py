"""The dashboard on a real server: pages from the project's records, a run's metrics as server-sent
events that follow the file and resume after Last-Event-ID, names from URLs kept inside the project, and
a second training refused with the lock's own message."""

from __future__ import annotations

import http.client
import threading
import time

import httpx

from forgellm.project.lock import ProjectLock
from web import dashboard_support as ds

RUN = "20261201-100000-lora-a"


def raw_status(url: str, path: str) -> int:
    """The status of GET `path` sent as written (httpx would resolve its dot segments before sending)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_pages_show_the_records_and_what_to_run_when_one_is_missing(tmp_path, monkeypatch):
    root = ds.project(tmp_path)
    with ds.dashboard(root, monkeypatch) as url:
        runs = httpx.get(f"{url}/")
        assert runs.status_code == 200 and "No training runs yet" in runs.text and "forge train" in runs.text
        assert "forge study" in httpx.get(f"{url}/data").text
        assert "No evaluation yet" in httpx.get(f"{url}/eval").text and "forge eval" in httpx.get(f"{url}/eval").text
        assert "forge export" in httpx.get(f"{url}/exports").text
        ds.run(root, RUN, extra=[{"event": "error", "kind": "crash", "message": "<script>alert(1)</script>"}])
        (root / "runs" / RUN / "summary.json").write_text(
            (root / "runs" / RUN / "summary.json").read_text().replace('"message": null', '"message": "<img src=x>"')
        )
        listed = httpx.get(f"{url}/").text
        assert RUN in listed and "completed" in listed and "1.3000" in listed and "No training runs yet" not in listed
        page = httpx.get(f"{url}/runs/{RUN}").text
        assert "Sized for 2 CPU cores" in page and "step-10" in page and "best" in page
        assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page  # user text is escaped


def test_names_from_urls_stay_inside_the_project(tmp_path, monkeypatch):
    root = ds.project(tmp_path)
    ds.run(root, RUN)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "run.json").write_text("{}")
    (root / "runs" / "link").symlink_to(tmp_path / "secret")
    with ds.dashboard(root, monkeypatch) as url:
        assert httpx.get(f"{url}/runs/{RUN}").status_code == 200
        for name in ("..", ".forge", "..%2F..%2Fsecret", "%2e%2e", "link", "no-such-run"):
            for path in (f"/runs/{name}", f"/runs/{name}/events", f"/api/runs/{name}", f"/api/curves?run={name}"):
                assert raw_status(url, path) == 404, path
        for name in ("..%2Fforge.yaml", "../forge.yaml", "forge.yaml", "study.json"):
            assert raw_status(url, f"/reports/{name}") == 404, name
        (root / "reports" / "study.html").write_text("<html><script>parent.x=1</script>report</html>")
        report = httpx.get(f"{url}/reports/study.html")
        assert report.status_code == 200 and report.headers["content-security-policy"].startswith("sandbox")


def test_events_follow_a_growing_file_and_resume_after_last_event_id(tmp_path, monkeypatch):
    root = ds.project(tmp_path)
    folder = ds.run(root, RUN, steps=3, status=None, evals={})
    metrics = folder / "metrics.jsonl"
    lock = ProjectLock(root, "train")
    lock.acquire(RUN)  # the run trains: the stream follows its file

    def write_more() -> None:
        time.sleep(1.5)  # several polls find nothing new: a stream that did not follow the file ends here
        for step in range(4, 9):
            time.sleep(0.3)
            ds.write_lines(metrics, [ds.step_line(step)])
        ds.write_lines(metrics, [], raw_tail="{damaged\n")
        ds.write_lines(metrics, [{"event": "end", "step": 8, "reason": "max_steps"}])
        time.sleep(0.5)
        lock.release()  # the run is over: the stream ends

    writer = threading.Thread(target=write_more)
    try:
        with ds.dashboard(root, monkeypatch) as url:
            started = time.monotonic()
            writer.start()
            events = ds.sse_events(f"{url}/runs/{RUN}/events", timeout=20)
            assert time.monotonic() - started < 10
            records = [(i, data["step"]) for i, kind, data in events if kind == "record" and data["event"] == "step"]
            assert records == [(2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6), (8, 7), (9, 8)]
            assert (10, "skipped", {"line": 10, "reason": "not valid JSON"}) in events
            assert events[-2][1:] == ("record", {"event": "end", "step": 8, "reason": "max_steps", "line": 11})
            assert events[-1][1] == "end" and events[-1][2]["skipped_here"] == 1
            resumed = ds.sse_events(f"{url}/runs/{RUN}/events", headers={"Last-Event-ID": "8"})
            assert [i for i, kind, _ in resumed if kind != "end"] == [9, 10, 11]
    finally:
        writer.join()
        lock.release()


def test_a_second_training_is_refused_with_the_lock_message(tmp_path, monkeypatch):
    root = ds.project(tmp_path)
    ds.run(root, RUN, status=None)
    with ds.dashboard(root, monkeypatch) as url:
        with ds.lock_held_elsewhere(root, RUN) as holder:
            refused = httpx.post(f"{url}/api/train", json={})
            assert refused.status_code == 409
            error = refused.json()["error"]
            assert error["code"] == "project-locked" and f"run {RUN} (process {holder.pid}" in error["message"]
            assert f"kill -INT {holder.pid}" in error["fix"]
            assert RUN in httpx.get(f"{url}/").text and "Training now" in httpx.get(f"{url}/").text
        assert list((root / ".forge").glob("ui-train-*.log")) == []  # nothing was started
        nothing = httpx.post(f"{url}/api/train/stop", json={})
        assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "no-training-run"
        assert httpx.post(f"{url}/api/train", data={"resume": "true"}).status_code == 415  # a form: refused
        bad = httpx.post(f"{url}/api/train", json={"max_steps": 0})
        assert bad.status_code == 400 and "max_steps" in bad.json()["error"]["message"]
        assert httpx.post(f"{url}/api/train", json={"resume": True, "run_id": "../x"}).status_code == 404


def test_a_training_that_dies_at_once_shows_its_output(tmp_path, monkeypatch):
    root = ds.project(tmp_path)  # planned, but nothing prepared: `forge train` refuses and exits
    with ds.dashboard(root, monkeypatch) as url:
        failed = httpx.post(f"{url}/api/train", json={}, timeout=60)
    assert failed.status_code == 400, failed.text
    error = failed.json()["error"]
    assert error["code"] == "train-start-failed" and "exit code 1" in error["message"]
    assert "forge prepare" in error["message"]  # the CLI's own message, from the log tail
    (log,) = (root / ".forge").glob("ui-train-*.log")
    assert str(log.relative_to(root)) in error["fix"]


def test_data_eval_and_exports_pages_show_their_records(tmp_path, monkeypatch):
    import json

    root = ds.project(tmp_path)
    finding = {"code": "dup", "severity": "warning", "title": "Duplicate rows", "detail": "12 rows repeat <b>x</b>",
               "fix": "Set preprocessing.dedup: true", "count": 12, "examples": [3]}  # fmt: skip
    column = {"name": "answer_text", "type": "str", "filled": 470, "missing": {"total": 10, "share": 0.0208},
              "distinct": None, "mean_chars": 88.5}  # fmt: skip
    (root / "reports" / "study.json").write_text(json.dumps({"rows": 480, "findings": [finding], "columns": [column]}))
    (root / "reports" / "study.html").write_text("<html>the study</html>")
    summary = {"base": {"loss": 2.5}, "tuned": {"loss": 1.1}, "verdict": {"status": "better", "message": "Better."}}
    example = {"question": "Where is my order?", "base": "No idea", "tuned": "It ships.", "reference": "Tomorrow."}
    (root / "reports" / "eval.json").write_text(json.dumps({"run_id": RUN, "summary": summary, "examples": [example]}))
    folder = root / "exports" / "bot"
    folder.mkdir(parents=True)
    (folder / "bot-q8_0.gguf").write_bytes(b"G" * 4096)
    (folder / "Modelfile").write_text('FROM ./bot-q8_0.gguf\nPARAMETER stop "<|im_end|>"\n')
    meta = {"name": "bot", "run_id": RUN, "files": {"gguf": {"q8_0": "bot-q8_0.gguf"}, "modelfile": "Modelfile"}}
    (folder / "metadata.json").write_text(json.dumps(meta))
    with ds.dashboard(root, monkeypatch) as url:
        data = httpx.get(f"{url}/data").text
        assert "480" in data and "Duplicate rows" in data and "preprocessing.dedup" in data
        assert "answer_text" in data and "88.5" in data and "2%" in data
        assert (
            "12 rows repeat &lt;b&gt;x&lt;/b&gt;" in data
            and '<iframe id="study-report" src="/reports/study.html" sandbox' in data
        )
        evaluation = httpx.get(f"{url}/eval").text
        assert "Better." in evaluation and "It ships." in evaluation and "Tomorrow." in evaluation
        exports = httpx.get(f"{url}/exports").text
        assert "bot-q8_0.gguf" in exports and "4.1 kB" in exports
        assert "PARAMETER stop &#34;&lt;|im_end|&gt;&#34;" in exports
        assert "ollama create bot -f exports/bot/Modelfile" in exports
