"""The image's HEALTHCHECK: Forge imports, and a GPU image sees its GPU (entrypoint.gpu_problem)."""

from __future__ import annotations

import sys

from forgellm.runtime.entrypoint import gpu_problem


def main() -> int:
    import forgellm  # noqa: F401  (a damaged install fails here)

    problem = gpu_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
