"""The one exception type users see. The CLI renders it as a code, a message and a fix, never a traceback.

Programs react to ``ForgeError.code`` and read ``ForgeError.data``; the message and the fix are for
people and may be reworded at any time. A code is a promise: renaming one breaks whoever matches it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Stable codes of ForgeError, by area. Sites that other code reacts to have a code of their own."""

    # --- command line and project
    USAGE_INVALID = "usage-invalid"  # an option or argument value the command cannot use
    DECLINED = "declined"  # the user answered no to a question; nothing was changed
    CONFIRMATION_NEEDED = "confirmation-needed"  # a question needs an answer and there is no terminal
    PROJECT_NOT_FOUND = "project-not-found"  # no forge.yaml here or above (data: path)
    # --- forge.yaml
    CONFIG_INVALID = "config-invalid"  # a value, key or combination of forge.yaml is not allowed
    CONFIG_SYNTAX = "config-syntax"  # forge.yaml is not valid YAML, or not a mapping
    CONFIG_TOO_NEW = "config-too-new"  # written by a newer Forge (data: version)
    # --- files and input data
    FILE_NOT_FOUND = "file-not-found"  # a path given by the user does not exist (data: path)
    FILE_UNREADABLE = "file-unreadable"  # exists but cannot be read: permissions, encoding, I/O error
    DATA_FORMAT_INVALID = "data-format-invalid"  # not valid JSON/CSV/Parquet/compressed file, or binary
    DATA_ENCODING_UNKNOWN = "data-encoding-unknown"  # the text encoding could not be told or is unknown
    DATA_EMPTY = "data-empty"  # the input holds no records
    DATA_RECIPE_MISMATCH = "data-recipe-mismatch"  # the records do not fit data.recipe / data.format
    DATA_NO_RECIPE = "data-no-recipe"  # no reading of the file fits it (data: columns, yaml)
    DATA_ROWS_REJECTED = "data-rows-rejected"  # too many rows rejected (data: reasons, missing_column)
    DATA_NOTHING_LEFT = "data-nothing-left"  # no example survived (data: reasons, missing_column, untrained)
    DATA_INPUT_CHANGED = "data-input-changed"  # an interrupted preparation cannot resume: the input changed
    DATA_CHECKS_FAILED = "data-checks-failed"  # the prepared output failed its own checks (a Forge bug)
    PREPARED_DATA_MISSING = "prepared-data-missing"  # no prepared data (or split) where training needs it
    PREPARED_DATA_STALE = "prepared-data-stale"  # prepared for another tokenizer or other settings
    NO_TRAINED_TOKENS = "no-trained-tokens"  # no token of the answers is trained (data: split)
    # --- chat templates and conversations
    TEMPLATE_UNKNOWN = "template-unknown"  # no chat template of that name (data: template)
    TEMPLATE_MISFIT = "template-misfit"  # its special tokens are not in the vocabulary (data: template, fits)
    TEMPLATE_MISSING = "template-missing"  # the chosen kind needs a template text or tokenizer it lacks
    TOKENIZER_NO_TEMPLATE = "tokenizer-no-template"  # 'tokenizer' asked for; it has no chat_template
    TEMPLATE_NOT_PREFIX_CONSISTENT = "template-not-prefix-consistent"  # answers cannot be located (data: template)
    TEMPLATE_INVALID = "template-invalid"  # role names, Jinja that fails to render, options it does not take
    CONVERSATION_INVALID = "conversation-invalid"  # a conversation a chat template cannot render
    # --- models, tokenizers, weights
    MODEL_UNKNOWN = "model-unknown"  # not a catalog name, hub id or path (data: model)
    MODEL_PATH_INVALID = "model-path-invalid"  # a file or folder that is not a model of the kind needed
    MODEL_UNAVAILABLE = "model-unavailable"  # cannot be downloaded or has no offline copy (data: model)
    MODEL_LOAD_FAILED = "model-load-failed"  # the model's files exist but do not load (data: cause)
    MODEL_UNSUPPORTED = "model-unsupported"  # its config lacks what Forge needs (a non-decoder model)
    TOKENIZER_UNREADABLE = "tokenizer-unreadable"  # the tokenizer does not load (data: cause)
    TOKENIZER_UNSUPPORTED = "tokenizer-unsupported"  # loads, but is not a kind Forge can use here
    ADAPTER_MISMATCH = "adapter-mismatch"  # a LoRA adapter does not belong to this base model
    WEIGHTS_MISSING = "weights-missing"  # no saved weights (no checkpoint, no safetensors, base gone)
    WEIGHTS_DAMAGED = "weights-damaged"  # weight files exist but are unreadable or empty (data: cause)
    CONTEXT_EXCEEDED = "context-exceeded"  # a prompt longer than the model's context
    DISTRIBUTED_UNREACHABLE = "distributed-unreachable"  # a machine of a multi-node run cannot reach the main one
    DEPENDENCY_MISSING = "dependency-missing"  # an optional Python package is not installed (data: package)
    # --- machine
    HARDWARE_UNSUPPORTED = "hardware-unsupported"  # a setting this machine cannot run (fp16 on CPU, qlora)
    MEMORY_INSUFFICIENT = "memory-insufficient"  # no model or setting fits this machine's memory
    TIME_BUDGET_TOO_SMALL = "time-budget-too-small"  # the time budget cannot hold one training step
    PRECISION_PROBE_FAILED = "precision-probe-failed"  # even fp32 gives no finite loss on this machine
    DISK_FULL = "disk-full"  # no space left (or a file-size limit); data: path when known
    WRITE_FAILED = "write-failed"  # writing output failed for another reason (data: cause)
    # --- training runs
    NO_TRAINING_RUN = "no-training-run"  # the project has no (suitable) training run yet
    RUN_NOT_FOUND = "run-not-found"  # no run of that name, or no unfinished run (data: run)
    NOTHING_TO_RESUME = "nothing-to-resume"  # the run already completed (data: run)
    RUN_NOT_RESUMABLE = "run-not-resumable"  # what the run needs to resume is gone (data: run, path)
    PROJECT_LOCKED = "project-locked"  # another writing command holds the project's lock (data: command, run, pid)
    CHECKPOINT_MISSING = "checkpoint-missing"  # no usable checkpoint to resume from
    TRAIN_OUT_OF_MEMORY = "train-out-of-memory"  # a worker ran out of memory (data: device, cause)
    TRAIN_NON_FINITE = "train-non-finite"  # NaN/inf loss or gradient norm (data: step)
    TRAIN_KILLED = "train-killed"  # the worker was killed by a signal (data: signal)
    TRAIN_HUNG = "train-hung"  # the worker's heartbeat stopped; the watchdog killed it (data: silent_seconds)
    TRAIN_CRASHED = "train-crashed"  # the worker failed in a way Forge does not classify (data: cause)
    # --- export and serving
    EXPORT_MISSING = "export-missing"  # no (suitable) export to load
    EXPORT_UNSUPPORTED = "export-unsupported"  # this model, tokenizer or template cannot be exported so
    QUANTIZE_FAILED = "quantize-failed"  # llama.cpp's quantizer failed
    HUB_PUSH_FAILED = "hub-push-failed"  # offline, no token, refused or unreachable Hugging Face Hub
    OLLAMA_FAILED = "ollama-failed"  # Ollama is not running or refused to create the model
    # --- advisors and their scripts
    ADVISOR_UNKNOWN = "advisor-unknown"  # not one of rules, gemini, openai
    ADVISOR_KEY_MISSING = "advisor-key-missing"  # no API key stored or given
    ADVISOR_KEY_WITHHELD = "advisor-key-withheld"  # the URL is not where the key may go (data: provider, url)
    ADVISOR_AUTH = "advisor-auth"  # the server rejected the API key
    ADVISOR_UNAVAILABLE = "advisor-unavailable"  # unreachable, timed out or kept failing
    ADVISOR_ANSWER_INVALID = "advisor-answer-invalid"  # an answer that is not JSON, off-schema or breaks rules
    ADVISOR_CANNOT = "advisor-cannot"  # the chosen advisor cannot do this task (the rules cannot write scripts)
    CREDENTIALS_INVALID = "credentials-invalid"  # an empty key, or an unreadable credentials file
    SANDBOX_UNAVAILABLE = "sandbox-unavailable"  # no sandbox (bubblewrap, docker) to run a script in
    SCRIPT_FAILED = "script-failed"  # an advisor-written script failed or wrote unusable output
    # runtime: Docker images and containers
    DOCKER_UNAVAILABLE = "docker-unavailable"  # no engine answers, or the docker SDK is missing
    DOCKER_GPU_UNAVAILABLE = "docker-gpu-unavailable"  # the engine cannot pass GPUs (no NVIDIA container toolkit)
    DOCKER_IMAGE_MISSING = "docker-image-missing"  # the image for this arch is not built (data: tag)
    DOCKER_IMAGE_STALE = "docker-image-stale"  # the image holds another Forge than this one (data: tag)
    DOCKER_BUILD_FAILED = "docker-build-failed"  # an image build failed or was interrupted (data: tag)
    DOCKER_ARCH_MISMATCH = "docker-arch-mismatch"  # the image's torch cannot run on this GPU (data: tag, capability)
    DOCKER_RUN_FAILED = "docker-run-failed"  # a container could not start (data: image)
    # web: `forge ui` and `forge serve`
    PORT_IN_USE = "port-in-use"  # the port to serve on is taken (data: host, port, free)
    WEB_UNAUTHORIZED = "web-unauthorized"  # a request without the server's token (HTTP 401)
    TRAIN_START_FAILED = "train-start-failed"  # `forge train` started by the UI exited at once (data: exit_code, log)
    MODEL_NOT_SERVED = "model-not-served"  # a request names a model the server does not offer (data: model)
    GENERATION_FAILED = "generation-failed"  # a model failed while answering, not in a way Forge knows (data: cause)
    # data mixtures
    DATA_SOURCE_MISSING = "data-source-missing"  # a required source of data.sources does not exist (data: name, path)
    DATA_SOURCE_OFFLINE = "data-source-offline"  # a hub source (hf:owner/name) is not on this machine (data: name, id)
    DATA_MIXTURE_SHORT = "data-mixture-short"  # fewer examples than a count (data: name, count, available)
    DATA_MIXTURE_INVALID = "data-mixture-invalid"  # sources that cannot be mixed (none left, wrong kind for the stage)
    # pipelines
    DOCS_EMPTY = "docs-empty"  # a documents folder with no readable text document (data: path, binary, empty)
    STAGE_MISSING = "stage-missing"  # a pipeline stage's record or result is not there (data: stage)
    EVAL_MISSING = "eval-missing"  # no reports/eval.json (or no figure in it) to act on
    # synthetic data
    SYNTHETIC_UNSUPPORTED = "synthetic-unsupported"  # a file `forge expand` cannot grow (documents, nested fields)
    SYNTHETIC_NONE_KEPT = "synthetic-none-kept"  # every written example was dropped; nothing was written (data: report)
    # cloud GPUs through SkyPilot (`forge cloud`)
    CLOUD_NO_ACCESS = "cloud-no-access"  # no credentials for the provider, or none enabled (data: provider, reason)
    CLOUD_GPU_UNAVAILABLE = "cloud-gpu-unavailable"  # the provider offers no such GPU (data: provider, gpu, offered)
    CLOUD_LAUNCH_FAILED = "cloud-launch-failed"  # SkyPilot could not provision or start the task (data: cause)
    CLOUD_NO_CLUSTER = "cloud-no-cluster"  # no cloud machine launched from this project, or it is gone (data: cluster)
    CLOUD_SYNC_FAILED = "cloud-sync-failed"  # the run folder could not be copied back from the machine (data: cause)


class ForgeError(Exception):
    """A problem the user can act on: ``message`` says what is wrong, ``fix`` says what to do.

    ``code`` is required so that no raise site goes without one; ``data`` holds the values a program
    reacting to the code needs (e.g. ``{"template": "chatml", "fits": ["zephyr"]}``), and ``cause``
    there is the text of a library's exception this error wraps (which diagnosis may classify).
    """

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode,
        fix: str | None = None,
        details: list[str] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = ErrorCode(code)  # a worker's code arrives as a plain string
        self.fix = fix
        # Several independent problems found at once (e.g. every invalid key of forge.yaml).
        self.details = list(details or [])
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        parts = [self.message, *(f"  - {d}" for d in self.details)]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values: what the worker's error event carries (protocol.error_event)."""
        return {
            "code": str(self.code),
            "message": self.message,
            "fix": self.fix,
            "details": self.details,
            "data": self.data,
        }


def cause(exc: BaseException) -> str:
    """A library exception as text for ``data["cause"]``: what diagnosis may classify (OOM, disk, network)."""
    return f"{type(exc).__name__}: {exc}"
