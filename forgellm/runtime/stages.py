"""`forge ignite`'s stages through the runtime: the plan stays on the host; prepare and export run as
`forge prepare|export ... --runtime local` in a container, and training's worker attempts run in
containers (the supervisor stays on the host). The choice is made once per ignite, by the first stage
that runs something, and said through the ignite's progress lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.errors import ErrorCode, ForgeError


def stage_choice(carried: Any, options: Any, hooks: Any) -> Any:
    """The RuntimeChoice of this ignite (``options.runtime`` over forge.yaml's ``runtime:``)."""
    from forgellm.runtime.choice import choose_runtime

    if carried.runtime is None:
        requested = options.runtime or (carried.config.runtime if carried.config is not None else "auto")
        carried.runtime = choose_runtime(requested, purpose="forge ignite", gpu_work=True)
        hooks.step(carried.runtime.line())
    return carried.runtime


def training_runner(carried: Any, options: Any, hooks: Any) -> dict[str, Any]:
    """run_training's ``runner`` and ``runtime`` keywords."""
    choice = stage_choice(carried, options, hooks)
    return {"runner": choice.runner(), "runtime": choice.record()}


def in_container(carried: Any, options: Any, hooks: Any, stage: str, args: list[str]) -> bool:
    """Run ``forge STAGE ARGS`` in a container when the runtime is docker; False when it is local.
    ForgeError when the stage failed there (its own messages were shown above)."""
    from forgellm.runtime.container import container_name, local_model

    choice = stage_choice(carried, options, hooks)
    if choice.name != "docker":
        return False
    root = carried.layout.root
    read_only = [Path(options.data), *local_model(carried.config.model.ref, root)]
    command = ["forge", stage, *args, "-C", str(root), "--runtime", "local"]
    from forgellm.project.lock import ProjectLock

    lock = ProjectLock(root, "ignite")  # ignite holds the project lock: the forge inside takes it over
    lock.acquire()
    try:
        code = choice.runner().run_command(container_name(root.name, stage), command, root, project_dir=root,
                                           read_only=read_only, env=lock.hand_over())  # fmt: skip
    finally:
        lock.take_back()
        lock.release()
    if code == 130:  # Ctrl-C reached the stage inside: as if it had run here
        raise KeyboardInterrupt
    if code != 0:
        raise ForgeError(
            f"`forge {stage}` in the container (image {choice.image}) failed with exit code {code}; its messages "
            "are above.",
            fix="Correct what they say and run `forge ignite` again, or add --runtime local.",
            code=ErrorCode.DOCKER_RUN_FAILED,
        )
    return True
