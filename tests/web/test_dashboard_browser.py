"""The dashboard in a real browser (Playwright on Debian's chromium): the runs page lists the runs and
compares them, a run page draws metrics appended while it is open, and a second training is refused with
the lock's message on the page."""

from __future__ import annotations

import threading
import time

from forgellm.project.lock import ProjectLock
from web import dashboard_support as ds

RUN = "20261201-100000-lora-a"
OTHER = "20261201-110000-lora-b"
POINTS = "id => document.getElementById(id).data.map(trace => trace.x.length)"


def test_runs_page_lists_the_runs_and_compares_two(tmp_path, monkeypatch, page):
    root = ds.project(tmp_path)
    ds.run(root, RUN)
    ds.run(root, OTHER, steps=6, evals={3: 1.7, 6: 1.6})
    with ds.dashboard(root, monkeypatch) as url:
        page.goto(f"{url}/")
        rows = page.locator("#runs tbody tr")
        assert rows.count() == 2 and rows.nth(0).get_attribute("data-run") == OTHER  # newest first
        assert "completed" in rows.nth(1).inner_text() and "lora" in rows.nth(1).inner_text()
        page.check(f"input[value='{RUN}']")
        page.check(f"input[value='{OTHER}']")
        page.click("#compare")
        page.wait_for_function("document.getElementById('compare-chart').data?.length === 4")
        assert page.evaluate(POINTS, "compare-chart") == [6, 2, 10, 2]  # the table's order
        names = page.evaluate("document.getElementById('compare-chart').data.map(trace => trace.name)")
        assert names == [f"{OTHER} loss", f"{OTHER} val loss", f"{RUN} loss", f"{RUN} val loss"]


def test_run_page_draws_metrics_appended_while_it_is_open(tmp_path, monkeypatch, page):
    root = ds.project(tmp_path)
    folder = ds.run(root, RUN, steps=5, status=None, evals={5: 1.5}, checkpoints=(5,))
    ds.write_lines(folder / "metrics.jsonl", [], raw_tail="{not json\n")
    lock = ProjectLock(root, "train")
    lock.acquire(RUN)  # the run trains while the page is open
    try:
        with ds.dashboard(root, monkeypatch) as url:
            page.goto(f"{url}/runs/{RUN}")
            page.wait_for_function("document.getElementById('chart-loss').data[0].x.length === 5")
            assert page.evaluate(POINTS, "chart-lr") == [5] and page.evaluate(POINTS, "chart-memory") == [5]
            assert page.inner_text("#skipped-count") == "1"
            time.sleep(1.5)  # several polls find nothing new: a stream that did not follow the file ends here
            appended = time.monotonic()
            recovery = {"event": "recovery", "kind": "oom", "step": 7, "changes": {}, "explanation": "<b>smaller</b>"}
            writer = threading.Thread(
                target=ds.write_lines,
                args=(folder / "metrics.jsonl", [ds.step_line(6), ds.step_line(7), recovery, ds.eval_line(7, 1.4)]),
            )
            writer.start()
            writer.join()
            page.wait_for_function("document.getElementById('chart-loss').data[0].x.length === 7", timeout=5000)
            assert time.monotonic() - appended < 5
            assert page.evaluate(POINTS, "chart-loss") == [7, 2]
            page.wait_for_function("document.getElementById('chart-loss').layout.shapes?.length === 1")
            annotation = page.evaluate("document.getElementById('chart-loss').layout.annotations[0].text")
            assert "healing: oom" in annotation and "<b>" not in annotation
            assert page.inner_text("#incidents tbody").count("<b>smaller</b>") == 1  # shown as text
            lock.release()
            page.wait_for_function("document.getElementById('stream-state').textContent.startsWith('not training')")
            page.wait_for_function("document.getElementById('run-state').textContent === 'incomplete'")
    finally:
        lock.release()


def test_a_second_training_is_refused_on_the_page(tmp_path, monkeypatch, page):
    root = ds.project(tmp_path)
    ds.run(root, RUN, status=None)
    with ds.dashboard(root, monkeypatch) as url, ds.lock_held_elsewhere(root, RUN) as holder:
        page.goto(f"{url}/")
        page.click("#train-start")
        problem = page.locator("#problem")
        problem.wait_for(state="visible")
        text = problem.inner_text()
        assert "Another `forge train` is running in this project" in text and f"process {holder.pid}" in text
        assert f"kill -INT {holder.pid}" in text  # the fix comes with it
