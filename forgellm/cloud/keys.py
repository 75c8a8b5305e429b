"""The secrets a cloud training may need, by the environment variable the remote side reads.

Their values go to SkyPilot in memory at launch (the task's envs, as `sky launch --env NAME` does) and
never into the task file Forge writes; the file and the summary name them only.
"""

from __future__ import annotations

import os

# Environment variable -> Forge credentials provider that may hold it (None: the environment only).
SECRET_VARS: dict[str, str | None] = {
    "HF_TOKEN": None,  # gated models on the Hugging Face Hub
    "WANDB_API_KEY": None,  # training.report_to: wandb
    "GEMINI_API_KEY": "gemini",
    "OPENAI_API_KEY": "openai",
}


def cloud_secrets() -> dict[str, str]:
    """The secrets present here: the environment first, then Forge's credentials file."""
    from forgellm.config.settings import api_key

    found: dict[str, str] = {}
    for variable, provider in SECRET_VARS.items():
        value = os.environ.get(variable, "").strip() or (api_key(provider) if provider else None)
        if value:
            found[variable] = value
    return found
