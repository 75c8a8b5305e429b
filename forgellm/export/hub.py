"""`forge export --push-to-hub REPO`: upload an export folder to the Hugging Face Hub.

The token comes only from the environment (HF_TOKEN, or huggingface_hub's own login file through the
library); it is never written anywhere by Forge.
"""

from __future__ import annotations

import os
from pathlib import Path

from forgellm.errors import ErrorCode, ForgeError, cause

_REPO = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"


def push_export(folder: Path, repo: str, *, environ: dict[str, str] | None = None, private: bool = True) -> str:
    """Upload `folder` to the model repo `repo` (created private if missing); returns the repo's URL."""
    import re

    environ = dict(os.environ) if environ is None else environ
    if not re.match(_REPO, repo):
        raise ForgeError(
            f"{repo!r} is not a Hub repository id.",
            fix="Use the form OWNER/NAME, e.g. alice/support-bot.",
            code=ErrorCode.USAGE_INVALID,
        )
    if environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ForgeError(
            "Cannot push to the Hugging Face Hub: HF_HUB_OFFLINE is set, so no network request is allowed.",
            fix=f"Unset HF_HUB_OFFLINE on a machine with internet access and run `forge export --push-to-hub {repo}` "
            f"again; the export itself is complete in {folder}.",
            code=ErrorCode.HUB_PUSH_FAILED,
        )
    token = environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise ForgeError(
            "Cannot push to the Hugging Face Hub: no token (HF_TOKEN is not set).",
            fix="Create a write token at https://huggingface.co/settings/tokens and run "
            f"`HF_TOKEN=... forge export --push-to-hub {repo}`.",
            code=ErrorCode.HUB_PUSH_FAILED,
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = environ.get("HF_ENDPOINT") or None
    api = HfApi(token=token, endpoint=endpoint)
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            folder_path=str(folder),
            repo_type="model",
            commit_message=f"Upload {folder.name} (exported with Forge)",
            ignore_patterns=[".*"],
        )
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = {401: "the token was rejected", 403: "the token may not write to this repository"}.get(status, "")
        raise ForgeError(
            f"The Hugging Face Hub refused the upload to {repo}" + (f": {hint}" if hint else "") + f" ({exc}).",
            fix="Check HF_TOKEN (a write token) and the repository name; the export is complete locally.",
            code=ErrorCode.HUB_PUSH_FAILED,
            data={"cause": cause(exc)},
        ) from None
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        raise ForgeError(
            f"Cannot reach the Hugging Face Hub ({type(exc).__name__}: {exc}).",
            fix=f"Check the network connection and try again; the export is complete locally in {folder}.",
            code=ErrorCode.HUB_PUSH_FAILED,
            data={"cause": cause(exc)},
        ) from None
    return str(url)


def _is_network_error(exc: BaseException) -> bool:
    """Connection failures, whichever HTTP library (httpx, httpx2, requests) huggingface_hub uses today."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, OSError) or bool(names & {"TransportError", "ConnectionError", "TimeoutException"})
