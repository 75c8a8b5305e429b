"""Ctrl-C reaches the main thread: a display thread started by a command never takes the signal (a Docker
build's main thread blocked in a socket read would otherwise wait for the next byte before stopping)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from forgellm.cli.output import signals_for_main_thread


def _blocks_sigint(native_id: int) -> bool:
    for line in Path(f"/proc/self/task/{native_id}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << 1))  # SIGINT is signal 2: bit 1
    raise AssertionError("no SigBlk line")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_a_thread_started_inside_never_takes_ctrl_c_and_the_main_thread_still_does():
    from rich.live import Live

    before = set(threading.enumerate())
    live = Live()
    with signals_for_main_thread():
        live.start()
    try:
        started = [t for t in threading.enumerate() if t not in before]
        assert started and all(_blocks_sigint(t.native_id) for t in started)
        assert not _blocks_sigint(threading.main_thread().native_id)
    finally:
        live.stop()
