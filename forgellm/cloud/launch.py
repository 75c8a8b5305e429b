"""`forge cloud launch` as library calls: build, check and write the task (`plan_launch`), then launch it
and record the machine (`launch`). The CLI asks for confirmation in between."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from forgellm.cloud import sky_api
from forgellm.cloud.gpus import parse_gpu
from forgellm.cloud.keys import cloud_secrets
from forgellm.cloud.state import CloudState
from forgellm.cloud.task import CloudTask, build_task, check_provider, write_task
from forgellm.config.schema import ForgeConfig
from forgellm.project.layout import ProjectLayout


@dataclass(frozen=True)
class LaunchPlan:
    task: CloudTask
    validation: sky_api.Validation
    gpu_checked: bool  # the provider's catalog was read and offers the GPU at that count
    cost: sky_api.Cost | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.task.summary(),
            "validated_by_skypilot": True,
            "catalog_checked": self.validation.catalog_checked and self.gpu_checked,
            "cost_per_hour": None if self.cost is None else round(self.cost.per_hour, 2),
            "cost_provider": None if self.cost is None else self.cost.provider,
            "instance_type": None if self.cost is None else self.cost.instance_type,
        }


def plan_launch(
    layout: ProjectLayout, config: ForgeConfig, *, provider: str | None, gpu: str | None,
    name: str | None = None, nodes: int | None = None, image: str | None = None,
) -> LaunchPlan:  # fmt: skip
    """The task sized and checked offline (SkyPilot's parser and catalogs), written to .forge/cloud/<name>.yaml."""
    sky_api._sky()  # not installed: say so before any work
    check_provider(provider)
    request = parse_gpu(gpu) if gpu else None
    task = build_task(
        layout, config, provider=provider, gpu=request, name=name, nodes=nodes, image=image,
        secret_names=tuple(cloud_secrets()), offered=sky_api.offered_counts(provider),
    )  # fmt: skip
    validation = sky_api.validate(task)
    checked = sky_api.check_gpu_offered(provider, task.sizing.gpu, task.sizing.count)
    cost = sky_api.hourly_cost(provider, task.sizing.gpu, task.sizing.count, task.sizing.nodes)
    write_task(task, layout)
    return LaunchPlan(task, validation, checked, cost)


def launch(layout: ProjectLayout, plan: LaunchPlan) -> CloudState:
    """Provision and start the training through SkyPilot; the machine is recorded for status/logs/down."""
    job_id = sky_api.launch(plan.task, cloud_secrets())
    state = CloudState(
        cluster=plan.task.name, provider=plan.task.provider, accelerators=plan.task.sizing.accelerators,
        nodes=plan.task.sizing.nodes, task_file=str(plan.task.path),
        launched_at=datetime.now(UTC).isoformat(timespec="seconds"), job_id=job_id,
    )  # fmt: skip
    state.save(layout)
    return state
