"""Run by the image build (its last step): does the torch just installed serve the capabilities of the
image's tags? A build whose torch lacks, say, sm_120 would be tagged forge:blackwell and fail on the
first RTX 5090 kernel, the complaint LLaMA-Factory's cu12.4 image drew; here the build fails instead.

The capabilities come from FORGE_REQUIRE_GPU_CAPABILITIES (set by the Dockerfile from the variant);
empty means the CPU image, where torch must be a CPU build that imports.
"""

from __future__ import annotations

import os
import sys

from forgellm.runtime.images import unserved

CAPABILITIES_ENV = "FORGE_REQUIRE_GPU_CAPABILITIES"


def torch_arch_flags(torch) -> list[str]:
    """The arch flags torch was compiled for, whether or not a GPU is visible (none is during a build):
    ``torch.cuda.get_arch_list()`` answers [] without a GPU, the flags behind it do not."""
    flags = ""
    try:
        flags = torch._C._cuda_getArchFlags() or ""
    except (AttributeError, RuntimeError):
        pass
    return flags.split() if flags else list(torch.cuda.get_arch_list())


def main() -> int:
    import torch

    wanted = tuple(os.environ.get(CAPABILITIES_ENV, "").split())
    flags = torch_arch_flags(torch)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, arch flags: {' '.join(flags) or 'none'}")
    if not wanted:
        if torch.version.cuda is not None:
            print("the CPU image got a CUDA build of torch (check TORCH_INDEX and the wheelhouse)", file=sys.stderr)
            return 1
        return 0
    missing = unserved(flags, wanted)
    if missing:
        print(
            f"this torch build cannot run on compute capabilities {', '.join(missing)} "
            f"(its arch flags: {' '.join(flags) or 'none'}); the image would not work on those GPUs",
            file=sys.stderr,
        )
        return 1
    print(f"serves compute capabilities {', '.join(wanted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
