"""Where Forge's stages run: on this machine (local) or in a Docker container of Forge's image.

images.py  the image matrix: which tag serves which GPUs, and the rule that says whether a torch build's
           arch flags run on a compute capability.
engine.py  the Docker engine (docker SDK): reachable or not and why, GPU passthrough, images.
probe.py   runs inside a container (`python -m forgellm.runtime.probe`): prints what it sees as JSON.
probe_run.py     `forge docker probe` on the host: runs probe.py in a container of an image, saves the record.
probe_record.py  the record (ContainerProbe, FORGE_HOME/docker/probes/<tag>.json) and its checks: the image's
                 torch arch flags against each GPU the container saw, the driver's CUDA against torch's
                 (check_image_for_gpus; require_image_serves raises DOCKER_ARCH_MISMATCH before training).
probe_plan.py    `forge plan` on a saved probe's figures when training runs in a container.
"""
