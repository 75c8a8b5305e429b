"""Where Forge's stages run: on this machine (local) or in a Docker container of Forge's image.

images.py        the image matrix: which tag serves which GPUs, the rule that says whether a torch build's
                 arch flags run on a compute capability, and the tag this machine runs.
engine.py        the Docker engine (docker SDK): reachable or not and why, GPU passthrough, images.
context.py, build.py, base.py, status.py
                 `forge docker build|status`: the build context (docker/Dockerfile, this install's pins,
                 Forge's source, a wheelhouse), the build and its tags, a Debian base made with mmdebstrap.
archcheck.py, entrypoint.py, health.py
                 run inside the image: the build's arch assertion, the GPU check before a command, the
                 HEALTHCHECK.
choice.py        runtime: auto|local|docker -> RuntimeChoice (which, and why), before any stage runs.
runner.py, container.py, stages.py
                 the Runner protocol (local subprocess, docker container per training attempt), what a
                 container gets (mounts, user, GPUs, environment), prepare/export/ignite in a container.
probe.py         runs inside a container (`python -m forgellm.runtime.probe`): prints what it sees as JSON.
probe_run.py     `forge docker probe` on the host: runs probe.py in a container of an image, saves the record.
probe_record.py  the record (ContainerProbe, FORGE_HOME/docker/probes/<tag>.json) and its checks: the image's
                 torch arch flags against each GPU the container saw, the driver's CUDA against torch's
                 (check_image_for_gpus; require_image_serves raises DOCKER_ARCH_MISMATCH before training).
probe_plan.py    `forge plan` on a saved probe's figures when training runs in a container.
"""
