"""Library warnings stop at the CLI boundary: whatever a new release of transformers or torch starts to
print (FutureWarning, DeprecationWarning, logged advice) never reaches a user's terminal, while
FORGE_DEBUG=1 shows it all. Run through the console script's entry function in a fresh interpreter,
because the filters are set there and nowhere else; the warnings come from a stand-in command that warns
the way those libraries do (the real ones change with every release)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

NOISY_COMMAND = textwrap.dedent(
    """
    import sys, warnings
    from forgellm.cli import main

    @main.app.command("noisy")
    def noisy() -> None:
        from transformers.utils import logging as hf_logging

        warnings.warn("`past_key_values` is deprecated, use `cache`", FutureWarning, stacklevel=1)
        warnings.warn("torch.foo is deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("a user warning from a library", UserWarning, stacklevel=1)
        hf_logging.get_logger("transformers.generation").warning("advice from transformers' logger")
        print("forge output")

    sys.argv = ["forge", "noisy"]
    main.run()
    """
)
CHATTER = ("past_key_values", "torch.foo", "a user warning", "advice from transformers")


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "FORGE_DEBUG") and
             not k.startswith("TRANSFORMERS_")}  # fmt: skip
    return subprocess.run([sys.executable, "-c", NOISY_COMMAND], env={**clean, **env}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_library_warnings_do_not_reach_the_terminal():
    done = _run()
    assert done.returncode == 0, done.stderr
    assert "forge output" in done.stdout
    assert not [c for c in CHATTER if c in done.stdout + done.stderr], done.stderr


@pytest.mark.parametrize("env", [{"FORGE_DEBUG": "1"}, {"PYTHONWARNINGS": "default"}])
def test_whoever_debugs_still_sees_them(env):
    done = _run(**env)
    assert done.returncode == 0, done.stderr
    assert all(c in done.stderr for c in CHATTER[:3]), done.stderr
