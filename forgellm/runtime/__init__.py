"""Where Forge's stages run: on this machine (local) or in a Docker container of Forge's image.

images.py  the image matrix: which tag serves which GPUs, and the rule that says whether a torch build's
           arch flags run on a compute capability.
engine.py  the Docker engine (docker SDK): reachable or not and why, GPU passthrough, images.
"""
