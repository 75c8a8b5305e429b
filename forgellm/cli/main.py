"""The `forge` command. Sub-commands live in sibling modules; each is a thin wrapper."""

from __future__ import annotations

from forgellm.cli.app import app

__all__ = ["app", "run"]


def _register() -> None:
    # Each module adds its commands to `app`; importing them is cheap (no torch, no transformers).
    from forgellm.cli import (  # noqa: F401
        cloud_cmds,
        config_cmds,
        data_cmds,
        docker_cmds,
        docker_probe_cmds,
        eval_cmds,
        expand_cmds,
        export_cmds,
        ignite_cmds,
        inference_cmds,
        machine_cmds,
        pipeline_cmds,
        plan_cmds,
        project_cmds,
        template_cmds,
        train_cmds,
        web_cmds,
    )


_register()


def run() -> None:
    """The console script: library warnings are filtered here, at the boundary, for every command."""
    from forgellm.quiet import quiet_at_cli_boundary

    quiet_at_cli_boundary()
    app()
