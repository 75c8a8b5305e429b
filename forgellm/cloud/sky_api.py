"""Everything Forge asks SkyPilot, through its Python API, imported lazily (it is an optional extra).

Offline and without credentials Forge can still: parse the task with SkyPilot's own parser, read
SkyPilot's GPU catalogs when they are on this machine (~/.sky/catalogs, downloaded by SkyPilot on first
use online) for the GPUs a provider offers and their prices, and run SkyPilot's own credential checks.
Provisioning, logs and teardown need the cloud.
"""

from __future__ import annotations

import copy
import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.cloud.task import PROVIDERS, REMOTE_WORKDIR, CloudTask
from forgellm.errors import ErrorCode, ForgeError

INSTALL_FIX = "Install SkyPilot with Forge's cloud extra: pip install 'forgellm[cloud]'."


def _sky() -> Any:
    try:
        import sky
    except ImportError:
        raise ForgeError(
            "Cloud GPUs need SkyPilot, which is not installed.",
            fix=INSTALL_FIX,
            code=ErrorCode.DEPENDENCY_MISSING,
            data={"package": "skypilot"},
        ) from None
    return sky


@contextmanager
def _quiet_sky() -> Iterator[None]:
    """SkyPilot logs each failed catalog download to the terminal; Forge says it once, in its own words."""
    logger = logging.getLogger("sky")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _offline_error(exc: BaseException) -> bool:
    """A catalog SkyPilot could not download (no network, no copy in ~/.sky/catalogs)."""
    import requests

    return isinstance(exc, requests.exceptions.RequestException)


@dataclass(frozen=True)
class Validation:
    catalog_checked: bool  # False: offline without SkyPilot's catalog; the accelerator is checked at launch
    resources: str


def validate(task: CloudTask) -> Validation:
    """Parse the task as `sky launch` would (sky.Task.from_yaml_config); offline without a catalog, with
    SkyPilot's task schema only. A task SkyPilot rejects is a ForgeError with SkyPilot's reason."""
    sky = _sky()
    from sky.utils import common_utils, schemas

    try:
        with _quiet_sky():
            parsed = sky.Task.from_yaml_config(copy.deepcopy(task.config))  # it pops the keys it reads
        return Validation(True, ", ".join(str(r) for r in parsed.resources))
    except Exception as exc:  # SkyPilot's parse errors are ValueError, jsonschema's and its own
        if not _offline_error(exc):
            raise ForgeError(
                f"SkyPilot rejects the task: {str(exc).strip()}",
                fix="Check --gpu, --provider and --image; the task is in " + str(task.path),
                code=ErrorCode.USAGE_INVALID,
                data={"cause": str(exc)},
            ) from None
    common_utils.validate_schema(copy.deepcopy(task.config), schemas.get_task_schema(), "Invalid task: ")
    return Validation(False, task.sizing.accelerators)


def _catalog(provider: str, gpu: str | None = None, count: int | None = None) -> dict[str, list[Any]] | None:
    """SkyPilot's catalog offers of a provider (GPU name -> instance types), or None when the catalog is not
    on this machine and cannot be downloaded. Kubernetes has none: its GPUs are those of your cluster."""
    if provider == "kubernetes":
        return None
    sky = _sky()
    from sky.clouds.service_catalog import common

    from forgellm.config.settings import offline_mode

    if offline_mode() and not Path(common.get_catalog_path(f"{provider}/vms.csv")).is_file():
        return None  # FORGE_OFFLINE / HF_HUB_OFFLINE: no download attempt, only a catalog already here
    try:
        with _quiet_sky():
            return dict(sky.list_accelerators(gpus_only=True, clouds=provider, quantity_filter=count, name_filter=gpu))
    except Exception as exc:
        if _offline_error(exc):
            return None
        raise


def offered_counts(provider: str | None) -> dict[str, tuple[int, ...]] | None:
    """GPU name -> the counts one machine of the provider has, from its catalog; None when unknown."""
    offers = _catalog(provider) if provider else None
    if offers is None:
        return None
    return {gpu: tuple(sorted({int(o.accelerator_count) for o in items})) for gpu, items in offers.items()}


def check_gpu_offered(provider: str | None, gpu: str, count: int) -> bool:
    """Raise when the provider's catalog has no such GPU (or not that many on one machine); False when
    there is no catalog to ask (offline), True when it was checked."""
    if provider is None:
        return False
    offers = _catalog(provider)
    if offers is None:
        return False
    if gpu not in offers:
        raise ForgeError(
            f"{provider} does not offer {gpu} GPUs.",
            fix=f"Pick one {provider} has: {', '.join(sorted(offers)) or 'none listed'} (--gpu NAME:COUNT), "
            "or another --provider.",
            code=ErrorCode.CLOUD_GPU_UNAVAILABLE,
            data={"provider": provider, "gpu": gpu, "offered": sorted(offers)},
        )
    counts = sorted({int(o.accelerator_count) for o in offers[gpu]})
    if count not in counts:
        raise ForgeError(
            f"{provider} has no machine with {count} x {gpu}; it has {', '.join(map(str, counts))} per machine.",
            fix=f"Use --gpu {gpu}:N with N one of {', '.join(map(str, counts))}, or more machines (--nodes).",
            code=ErrorCode.CLOUD_GPU_UNAVAILABLE,
            data={"provider": provider, "gpu": gpu, "counts": counts},
        )
    return True


@dataclass(frozen=True)
class Cost:
    per_hour: float
    provider: str
    instance_type: str


def hourly_cost(provider: str | None, gpu: str, count: int, nodes: int) -> Cost | None:
    """The cheapest on-demand price per hour of the machines, from SkyPilot's catalogs; None offline."""
    best: Cost | None = None
    for cloud in [provider] if provider else PROVIDERS:
        offers = _catalog(cloud, gpu, count) or {}
        for offer in offers.get(gpu, []):
            if offer.price and offer.price == offer.price and (best is None or offer.price * nodes < best.per_hour):
                best = Cost(offer.price * nodes, cloud, offer.instance_type)
    return best


def require_access(provider: str | None) -> None:
    """SkyPilot's own credential check, local only: of the provider, or of any cloud when none is named."""
    sky = _sky()
    if provider is not None:
        cloud = sky.clouds.CLOUD_REGISTRY.from_str(provider)
        with _quiet_sky():
            ok, reason = cloud.check_credentials()
        if not ok:
            raise ForgeError(
                f"SkyPilot cannot use {provider}: {str(reason).strip()}",
                fix=f"Set up {provider}'s credentials as above, then run `sky check {provider}` to confirm.",
                code=ErrorCode.CLOUD_NO_ACCESS,
                data={"provider": provider, "reason": str(reason)},
            )
        return
    from sky import check

    try:
        with _quiet_sky():
            check.get_cached_enabled_clouds_or_refresh(raise_if_no_cloud_access=True)
    except sky.exceptions.NoCloudAccessError:
        raise ForgeError(
            "No cloud is set up for SkyPilot: it found no credentials for any provider.",
            fix="Set up one provider's credentials (see `sky check` for what each needs), or name one with --provider.",
            code=ErrorCode.CLOUD_NO_ACCESS,
            data={"provider": None},
        ) from None


def _failure(exc: BaseException, cluster: str) -> ForgeError:
    """SkyPilot's exception as a ForgeError by its class (its messages are shown as SkyPilot's words)."""
    sky = _sky()
    errors = sky.exceptions
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, errors.NoCloudAccessError):
        return ForgeError(
            "No cloud is set up for SkyPilot.", fix="Run `sky check` and set up a provider's credentials.",
            code=ErrorCode.CLOUD_NO_ACCESS, data={"cause": text},
        )  # fmt: skip
    if isinstance(exc, errors.ClusterDoesNotExist | errors.ClusterNotUpError):
        return ForgeError(
            f"The cloud machine '{cluster}' is not up (SkyPilot: {text}).",
            fix="See `forge cloud status`; start a new one with `forge cloud launch`.",
            code=ErrorCode.CLOUD_NO_CLUSTER, data={"cluster": cluster, "cause": text},
        )  # fmt: skip
    if isinstance(exc, errors.ResourcesUnavailableError):
        return ForgeError(
            f"No cloud has the machine right now: {text}",
            fix="Try another --provider or --gpu, or again later.",
            code=ErrorCode.CLOUD_LAUNCH_FAILED, data={"cause": text},
        )  # fmt: skip
    return ForgeError(
        f"SkyPilot failed: {text}", fix="Run `sky check`; the details are in SkyPilot's log (~/sky_logs).",
        code=ErrorCode.CLOUD_LAUNCH_FAILED, data={"cause": text},
    )  # fmt: skip


def sky_task(task: CloudTask, secrets: dict[str, str]) -> Any:
    """The sky.Task to launch: the written task's mapping, plus the secrets as envs held in memory only (what
    `sky launch --env NAME` does); SkyPilot exports them on each node for setup and run."""
    parsed = _sky().Task.from_yaml_config(copy.deepcopy(task.config))
    parsed.update_envs(secrets)
    return parsed


def launch(task: CloudTask, secrets: dict[str, str]) -> int | None:
    """sky.launch of the task with its secrets; returns the job id. The run is detached: `forge cloud logs`
    follows it."""
    sky = _sky()
    parsed = sky_task(task, secrets)
    try:
        job_id, _handle = sky.launch(parsed, cluster_name=task.name, detach_run=True, stream_logs=True)
    except Exception as exc:
        raise _failure(exc, task.name) from None
    return job_id


def cluster_status(cluster: str) -> dict[str, Any]:
    """SkyPilot's record of the machine, refreshed from the cloud."""
    sky = _sky()
    try:
        records = sky.status(cluster_names=[cluster], refresh=True)
    except Exception as exc:
        raise _failure(exc, cluster) from None
    if not records:
        raise ForgeError(
            f"SkyPilot knows no cloud machine named '{cluster}' (taken down, or launched from another computer).",
            fix="Start one with `forge cloud launch`.",
            code=ErrorCode.CLOUD_NO_CLUSTER,
            data={"cluster": cluster},
        )
    record = records[0]
    return {
        "cluster": cluster,
        "status": getattr(record["status"], "value", str(record["status"])),
        "resources": str(getattr(record.get("handle"), "launched_resources", "") or ""),
        "launched_at": record.get("launched_at"),
        "autostop": record.get("autostop"),
    }


def tail_logs(cluster: str, job_id: int | None, follow: bool) -> None:
    sky = _sky()
    try:
        sky.tail_logs(cluster, job_id, follow=follow)
    except Exception as exc:
        raise _failure(exc, cluster) from None


def down(cluster: str) -> None:
    sky = _sky()
    try:
        sky.down(cluster)
    except Exception as exc:
        raise _failure(exc, cluster) from None


def sync_command(cluster: str, runs_dir: Path) -> list[str]:
    """rsync through the SSH alias SkyPilot writes for each cluster (its documented way to copy files down):
    the head node's runs/ into the project's runs/."""
    return ["rsync", "-az", f"{cluster}:{REMOTE_WORKDIR}/runs/", f"{runs_dir}/"]


def sync_runs(cluster: str, runs_dir: Path) -> None:
    runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(sync_command(cluster, runs_dir), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ForgeError(
            "Copying the runs back needs rsync, which is not installed.",
            fix="Install rsync (apt install rsync / brew install rsync), or pass --no-sync to lose them.",
            code=ErrorCode.CLOUD_SYNC_FAILED,
        ) from None
    if done.returncode != 0:
        raise ForgeError(
            f"Copying runs/ back from '{cluster}' failed: {done.stderr.strip()[-400:]}",
            fix="Check `forge cloud status`; the machine is left running so nothing is lost. "
            "Pass --no-sync to take it down without copying.",
            code=ErrorCode.CLOUD_SYNC_FAILED,
            data={"cluster": cluster, "cause": done.stderr[-2000:]},
        )
