"""`forge docker probe` on the host: run runtime/probe.py in a container of an image, keep the record.

The container gets every GPU of the host (device requests) when the host has NVIDIA GPUs and the engine
can pass them, no network, the probe as entrypoint (an image entrypoint that refuses to start without a
GPU must not hide what the container sees), and is removed afterwards whatever happens.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.images import ARCHES
from forgellm.runtime.probe import PROBE_FORMAT
from forgellm.runtime.probe_record import ContainerProbe, probe_path

if TYPE_CHECKING:
    from forgellm.hardware.probe import HardwareInfo

# An image to use instead of forge:<arch> (one built under another name); `forge plan` and `forge docker
# probe` without --image read it.
PROBE_COMMAND = ["python", "-m", "forgellm.runtime.probe"]


def machine_image(host: HardwareInfo, arch: str = "auto") -> str:
    """The image tag this machine runs (images.machine_image)."""
    from forgellm.runtime.images import machine_image as image_for

    return image_for([g.compute_capability for g in host.gpus], arch)[0]


def probe_image(
    tag: str, *, client: Any = None, host: HardwareInfo | None = None, timeout: float = 120,
    mem_limit: str | int | None = None, nano_cpus: int | None = None, save: bool = True,
) -> ContainerProbe:  # fmt: skip
    """Probe ``tag`` in a container and (``save``) keep the record under FORGE_HOME. ``mem_limit`` and
    ``nano_cpus`` give the container the limits training would have (the probe reports what it is given)."""
    from forgellm.runtime.engine import TOOLKIT_INSTALL, gpu_passthrough_problem, image_attrs, require_engine

    client = client or require_engine("`forge docker probe`")
    attrs = image_attrs(client, tag)
    if attrs is None:
        raise image_missing(tag)
    host = host or _host()
    requests, note = None, None
    if host.gpus:
        problem = gpu_passthrough_problem(client)
        if problem is None:
            from docker.types import DeviceRequest

            requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        else:
            note = f"{problem}; {TOOLKIT_INSTALL}"
    answer = _run(client, tag, requests, timeout, mem_limit, nano_cpus)
    probe = ContainerProbe(
        tag=tag, image_id=attrs.get("Id"), made_at=datetime.now(UTC).isoformat(timespec="seconds"),
        host_gpus=_host_gpus(host),
        gpus_requested=requests is not None, gpu_note=note, container=answer,
    )  # fmt: skip
    if save:
        probe.save()
    return probe


def image_missing(tag: str) -> ForgeError:
    arch = tag.partition(":")[2] if tag.startswith("forge:") and tag.partition(":")[2] in ARCHES else "auto"
    return ForgeError(
        f"The Docker image {tag} does not exist on this engine.",
        fix=f"forge docker build --arch {arch}",
        code=ErrorCode.DOCKER_IMAGE_MISSING,
        data={"tag": tag},
    )


def _run(client: Any, tag: str, requests: list | None, timeout: float, mem_limit: Any, nano_cpus: Any) -> dict:
    from docker.errors import DockerException

    container = None
    try:
        container = client.containers.create(
            tag, entrypoint=PROBE_COMMAND, command=[], name=f"forge-probe-{uuid.uuid4().hex[:10]}",
            network_mode="none", device_requests=requests, mem_limit=mem_limit, nano_cpus=nano_cpus,
            labels={"forge.role": "probe"},
        )  # fmt: skip
        container.start()
        status = container.wait(timeout=timeout)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    except DockerException as exc:
        raise _run_failed(tag, str(exc)) from None
    except Exception as exc:  # the SDK's read timeout (requests) when the probe hangs
        raise _run_failed(tag, f"{type(exc).__name__}: {exc} (timeout {timeout:g} s)") from None
    finally:
        if container is not None:
            _remove(container)
    code = status.get("StatusCode")
    answer = _parse(out)
    if answer is None or code != 0:
        tail = (err.strip() or out.strip())[-1500:]
        raise _run_failed(tag, f"exit code {code}; {tail or 'no output'}")
    if answer.get("format") != PROBE_FORMAT:
        raise _run_failed(tag, f"probe format {answer.get('format')!r}, this Forge reads {PROBE_FORMAT}: "
                               "the image's Forge differs from this one")  # fmt: skip
    return answer


def _parse(out: str) -> dict | None:
    for line in reversed(out.strip().splitlines()):  # the JSON is the last line (libraries may print before)
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except Exception:  # already gone (the engine removed it), or the engine went away: nothing to keep
        pass


def _run_failed(tag: str, why: str) -> ForgeError:
    return ForgeError(
        f"The probe could not run in a container of {tag}: {why}",
        fix=f"Check the image (`docker run --rm {tag} python -m forgellm.runtime.probe`); rebuild it with "
        "`forge docker build` if Forge is missing or broken in it.",
        code=ErrorCode.DOCKER_RUN_FAILED,
        data={"image": tag},
    )


def _host_gpus(host: HardwareInfo) -> list[dict[str, Any]]:
    return [{"index": g.index, "name": g.name, "compute_capability": g.compute_capability} for g in host.gpus]


def _host() -> HardwareInfo:
    from forgellm.hardware.probe import probe_hardware

    return probe_hardware()


def saved_probe(tag: str, client: Any) -> tuple[ContainerProbe | None, str | None]:
    """The saved probe of ``tag`` when it was made from the image the engine has now; else (None, why it
    was ignored), (None, None) when there is none."""
    from forgellm.runtime.engine import image_attrs

    probe = ContainerProbe.load(probe_path(tag))
    if probe is None:
        return None, None
    attrs = image_attrs(client, tag)
    if attrs is None:
        return None, f"The saved probe of {tag} was ignored: the image no longer exists."
    if attrs.get("Id") != probe.image_id:
        made, now = str(probe.image_id)[:19], str(attrs.get("Id"))[:19]
        return None, (f"The saved probe of {tag} was ignored: it was made from image {made}, the engine now has "
                      f"{now} (rebuilt). Run `forge docker probe` again.")  # fmt: skip
    return probe, None


def checked_probe(tag: str, client: Any, host: HardwareInfo | None = None) -> ContainerProbe:
    """For the docker runner, before training in ``tag``: the saved probe while the image and this machine's
    GPUs are unchanged, else a new one (saved); raises DOCKER_ARCH_MISMATCH when the image cannot train on
    the GPUs its container sees (probe_record.require_image_serves)."""
    from forgellm.runtime.probe_record import require_image_serves

    host = host or _host()
    probe, _ = saved_probe(tag, client)
    if probe is None or probe.host_gpus != _host_gpus(host):  # a GPU added, removed or swapped: probe again
        probe = probe_image(tag, client=client, host=host)
    require_image_serves(probe)
    return probe
