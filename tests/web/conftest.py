"""Browser tests: Playwright driving Debian's chromium (/usr/bin/chromium; a browser is never downloaded).
A failing browser test leaves a screenshot of its page in a folder it prints."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inference.inference_support import lyon_adapter_dir, lyon_merged_dir, paris_model_dir  # noqa: F401

CHROMIUM = os.environ.get("FORGE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)  # the page fixture looks at report_call
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (`apt-get install chromium`; .ci/run installs it)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        # --no-sandbox: the tests run as root in CI, where chromium's own sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        folder = Path(os.environ.get("FORGE_TEST_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screenshots")
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / f"{request.node.name}.png"
        opened.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot of the failing page: {shot}")
    context.close()
