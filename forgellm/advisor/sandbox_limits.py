"""What every sandbox mode shares: the limits of a script and the names of its world inside (its
folder, its file, the user it runs as, its environment). Its own module so that the modes
(``sandbox_bwrap``, ``sandbox_docker``) and ``sandbox``, which picks one, import it without importing
each other."""

from __future__ import annotations

from dataclasses import dataclass

NOBODY = 65534
SANDBOX_DIR = "/work"  # where the script's folder appears inside the sandbox
SCRIPT_NAME = "script.py"
TAIL_CHARS = 4000
_GIB = 1024**3
MINIMAL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": SANDBOX_DIR}


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 60
    wall_seconds: float = 120.0
    memory_bytes: int = 2 * _GIB  # address space of each process
    max_processes: int = 64
    max_output_bytes: int = 2 * _GIB  # largest file the script may write
    tmp_bytes: int = 256 * 1024**2  # size of its private /tmp (memory-backed)
    work_bytes: int = 2 * _GIB  # size of its working folder (memory-backed in bubblewrap)
    max_files: int = 1000  # files and links it may leave in its working folder

    def rlimits(self) -> dict[str, list[int]]:
        # The hard CPU limit one second later turns an ignored SIGXCPU into SIGKILL.
        return {
            "RLIMIT_AS": [self.memory_bytes, self.memory_bytes],
            "RLIMIT_CPU": [self.cpu_seconds, self.cpu_seconds + 1],
            "RLIMIT_FSIZE": [self.max_output_bytes, self.max_output_bytes],
            "RLIMIT_NPROC": [self.max_processes, self.max_processes],
            "RLIMIT_CORE": [0, 0],
        }
