"""Library chatter stays off the terminal of a `forge` command (forgellm/quiet.py), checked in a fresh
process as the command starts one: DeepSpeed, imported by accelerate inside every save_pretrained, logs to
stdout that it found no GPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

SAVE_A_TINY_MODEL = """
import sys, tempfile
if sys.argv[1] == "quiet":
    from forgellm.quiet import quiet_at_cli_boundary
    quiet_at_cli_boundary()
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2)
LlamaForCausalLM(config).save_pretrained(tempfile.mkdtemp())
"""


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed (a dev extra) is not installed")
def test_deepspeeds_no_gpu_notice_stays_off_the_terminal():
    def output(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", SAVE_A_TINY_MODEL, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    notice = "Setting accelerator to CPU"
    assert notice in output("loud")  # what a user would see without Forge's filter (on a machine without GPU)
    assert notice not in output("quiet")
