"""How a failing command reports: known failures get the rules advisor's diagnosis, bugs stay bugs."""

from __future__ import annotations

import errno

import typer
from typer.testing import CliRunner

from forgellm.cli.app import ForgeGroup
from forgellm.config.io import save_config
from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError

runner = CliRunner()


def _app(error: BaseException) -> typer.Typer:
    """A one-command app with Forge's error handling, whose command fails with ``error``."""
    app = typer.Typer(cls=ForgeGroup)

    @app.command()
    def train() -> None:
        raise error

    @app.command()
    def other() -> None:  # a second command, so `train` is a sub-command as in `forge`
        pass

    return app


def _run(error: BaseException, tmp_path, monkeypatch, config: ForgeConfig | None = None):
    if config is not None:
        save_config(config, tmp_path / "forge.yaml")
    monkeypatch.chdir(tmp_path)
    return runner.invoke(_app(error), ["train"], catch_exceptions=False)


def test_out_of_memory_is_explained_with_a_config_change(tmp_path, monkeypatch):
    config = ForgeConfig.model_validate({"training": {"micro_batch_size": 8, "gradient_accumulation": 2}})
    result = _run(MemoryError("DefaultCPUAllocator: can't allocate memory"), tmp_path, monkeypatch, config)
    assert result.exit_code == 1  # the machine ran out, not a bug in Forge
    assert "Internal error" not in result.output
    assert "Likely cause:" in result.output
    assert "training.micro_batch_size: 4" in result.output  # halved from the project's 8


def test_disk_full_is_an_environment_failure(tmp_path, monkeypatch):
    result = _run(OSError(errno.ENOSPC, "No space left on device"), tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert "No space left on device" in result.output and "Likely cause:" in result.output


def test_forge_error_without_fix_gets_a_diagnosis_from_its_code(tmp_path, monkeypatch):
    # No word of the message names memory: the diagnosis must come from the code and data.
    error = ForgeError("Training stopped.", code=ErrorCode.TRAIN_OUT_OF_MEMORY, data={"device": "gpu"})
    result = _run(error, tmp_path, monkeypatch, ForgeConfig())
    assert result.exit_code == 1
    assert "Error [train-out-of-memory]: Training stopped." in result.output
    assert "Likely cause:" in result.output and "micro_batch_size" in result.output
    assert "GPU's memory" in result.output


def test_the_words_of_a_forge_error_are_not_diagnosed(tmp_path, monkeypatch):
    # Text that the rules would classify as a library's OOM, in a ForgeError that is not about memory.
    error = ForgeError("CUDA out of memory (this is only a message)", code=ErrorCode.USAGE_INVALID)
    result = _run(error, tmp_path, monkeypatch, ForgeConfig())
    assert "Error [usage-invalid]:" in result.output and "Likely cause:" not in result.output


def test_a_library_error_a_forge_error_wraps_is_still_classified(tmp_path, monkeypatch):
    # The cause is a library's text (data["cause"]), which the text rules may read.
    cause = "OSError: [Errno 28] No space left on device"
    error = ForgeError("Cannot load the model.", code=ErrorCode.MODEL_LOAD_FAILED, data={"cause": cause})
    result = _run(error, tmp_path, monkeypatch, ForgeConfig())
    assert "Likely cause:" in result.output and "disk is full" in result.output


def test_forge_error_with_its_own_fix_is_left_alone(tmp_path, monkeypatch):
    error = ForgeError("CUDA out of memory", code=ErrorCode.TRAIN_OUT_OF_MEMORY, fix="Use a smaller model.")
    result = _run(error, tmp_path, monkeypatch, ForgeConfig())
    assert "Error [train-out-of-memory]: CUDA out of memory" in result.output
    assert "Fix: Use a smaller model." in result.output
    assert "Likely cause:" not in result.output


def test_an_unknown_bug_stays_an_internal_error(tmp_path, monkeypatch):
    result = _run(RuntimeError("unexpected state"), tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert "Internal error" in result.output and "Likely cause:" not in result.output
