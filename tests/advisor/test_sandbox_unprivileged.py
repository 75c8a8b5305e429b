"""The sandbox tests again, as an unprivileged user: the branch normal users get (bubblewrap in a
user namespace, no drop to nobody) must hold the same protections as the one root gets.

CI runs as root, so this test re-runs the sandbox test files as ``nobody`` (uid 65534, via
``setpriv``). The interpreter may live in a folder nobody cannot enter (pyenv under /root): the
re-run happens in a private mount namespace (``unshare --mount``) where such a folder is replaced
by an open tmpfs holding only the installations the tests need. The host's own folders are unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from advisor.sandbox_support import needs_bwrap

NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]
SANDBOX_TESTS = ["tests/advisor/test_sandbox.py", "tests/advisor/test_sandbox_hardening.py"]
# Run first, as nobody: the re-run stops unless it really is uid/gid 65534 with no groups and no way to read
# what root can.
WHO_AM_I = ("import os, sys; ok = (os.getuid(), os.geteuid(), os.getgroups()) == (65534, 65534, []) "
            "and not os.access('/etc/shadow', os.R_OK); print('unprivileged' if ok else 'PRIVILEGED'); "
            "sys.exit(0 if ok else 3)")  # fmt: skip


@pytest.mark.slow  # ~20 s: `make test` runs it, `make test-fast` does not
@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: the sandbox tests themselves run as this user")
def test_sandbox_tests_pass_as_an_unprivileged_user():
    tools = [t for t in ("unshare", "setpriv", "mount") if shutil.which(t) is None]
    assert not tools, f"util-linux tools missing to switch to an unprivileged user: {tools}"
    scratch = Path(tempfile.mkdtemp(prefix="forge-unprivileged-"))
    try:
        for sub in ("home", "stage"):
            (scratch / sub).mkdir()
        os.chmod(scratch, 0o755)
        os.chown(scratch / "home", NOBODY, NOBODY)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(scratch / "home"),
            "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
        }  # fmt: skip
        pytest_args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
        # Docker's variants need root to start a private engine (test_sandbox_docker.py runs them as root).
        pytest_args += ["--basetemp", str(scratch / "home" / "pytest"), "-k", "not docker", *SANDBOX_TESTS]
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]
        check = shlex.join([*as_nobody, sys.executable, "-c", WHO_AM_I])
        script = " && ".join([*_open_up(scratch / "stage"), check, shlex.join([*as_nobody, *pytest_args])])
        run = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert output.startswith("unprivileged"), output[:500]
    counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", output))
    assert counts.get("passed", 0) >= 40 and "skipped" not in counts, output[-3000:]


def _open_up(stage: Path) -> list[str]:
    """Shell steps that make the interpreter, the virtual environment and the repository reachable
    for nobody in this mount namespace: each closed ancestor becomes a tmpfs with only them inside."""
    needed = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), REPO, Path(sys.executable).resolve().parent}
    by_cover: dict[Path, list[Path]] = {}
    for path in needed:
        closed = [p for p in [*reversed(path.parents), path] if not os.stat(p).st_mode & 0o001]
        if closed:
            by_cover.setdefault(closed[0], []).append(path)
    steps = []
    for n, (cover, paths) in enumerate(sorted(by_cover.items())):
        paths = [p for p in paths if not any(other in p.parents for other in paths)]
        for i, path in enumerate(paths):
            steps.append(f"mkdir -p {stage}/{n}-{i} && mount --bind {shlex.quote(str(path))} {stage}/{n}-{i}")
        steps.append(f"mount -t tmpfs -o mode=755 forge-test {shlex.quote(str(cover))}")
        for i, path in enumerate(paths):
            steps.append(f"mkdir -p {shlex.quote(str(path))} && mount --move {stage}/{n}-{i} {shlex.quote(str(path))}")
    return steps or ["true"]
