"""The Docker sandbox's image, built by Forge from this machine's own Python: no registry needed.

Many machines that run Docker cannot pull images (offline, air-gapped, a registry proxy), and a
pulled ``python`` image would bring a whole distribution the script does not need. Forge instead
imports a tarball of exactly what the bubblewrap sandbox shows: the interpreter (resolved), its
standard library (without site-packages, the test suite and the GUI modules), libpython, the
shared libraries those load, the dynamic loader and /etc/ld.so.cache, each at its real path. The
script therefore runs the same Python as the bubblewrap path, with the same results.

The image is tagged ``forge-sandbox-python:<fingerprint>``; the fingerprint covers the interpreter,
its library and the loader's cache (their sizes and times), so a Python or system upgrade makes a
new image and an unchanged machine builds it once (~2-5 s, ~100 MB).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

from forgellm.errors import ErrorCode, ForgeError

IMAGE_REPO = "forge-sandbox-python"
_IMAGE_FORMAT = "1"  # changes whenever what goes into the image changes
# Parts of the standard library a data conversion never imports: its test suite, GUI toolkits,
# installers, the static libpython; and site-packages (the script gets the standard library only).
_STDLIB_SKIPPED = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip"}
# Extension modules not loaded when listing the shared libraries (X11/Tk, CPython's own tests).
_MODULES_SKIPPED = ("_tkinter", "_test", "xx", "_ctypes_test", "_xxtestfuzz")

# Run by the interpreter itself: import every extension module of the standard library, then list
# every file mapped into the process: exactly the shared libraries (and locale data) it loads.
_LIST_LIBRARIES = f"""
import importlib, os, sys, sysconfig
dynload = os.path.join(sysconfig.get_path("stdlib"), "lib-dynload")
for name in sorted(os.listdir(dynload)) if os.path.isdir(dynload) else []:
    module = name.split(".")[0]
    if not module.startswith({_MODULES_SKIPPED!r}):
        try:
            importlib.import_module(module)
        except Exception:
            pass  # the module cannot load here, so it cannot load in the sandbox either
mapped = set()
for line in open("/proc/self/maps"):
    parts = line.split(None, 5)
    if len(parts) == 6 and parts[5].startswith("/"):
        mapped.add(parts[5].strip())
print("\\n".join(sorted(mapped)))
"""


def python_path() -> Path:
    return Path(sys.executable).resolve()


def stdlib_dir() -> Path:
    return Path(sysconfig.get_path("stdlib")).resolve()


def image_tag() -> str:
    """The tag of the image for this machine's Python; cheap (a few stat calls)."""
    digest = hashlib.sha256(f"{_IMAGE_FORMAT}|{sys.version}|{python_path()}".encode())
    watched = [python_path(), stdlib_dir(), stdlib_dir() / "lib-dynload", Path("/etc/ld.so.cache")]
    watched += sorted(Path(sys.base_prefix).resolve().glob("lib/libpython*.so*"))
    for path in watched:
        if path.exists():
            info = path.stat()
            digest.update(f"|{path}|{info.st_size}|{info.st_mtime_ns}".encode())
    return f"{IMAGE_REPO}:{digest.hexdigest()[:16]}"


def ensure_image(tag: str | None = None) -> str:
    """The sandbox image's tag, building the image first when the engine does not have it (asked
    each run, ~30 ms: an image deleted meanwhile is built again rather than pulled from a registry)."""
    tag = tag or image_tag()
    known = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, timeout=60)
    if known.returncode != 0:
        build_image(tag)
    return tag


def build_image(tag: str) -> None:
    """``docker import`` a tarball of the files listed by :func:`image_members`."""
    process = subprocess.Popen(
        ["docker", "import", "--message", "Forge's sandbox for advisor-written scripts", "-", tag],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stderr is not None
    try:
        with tarfile.open(fileobj=process.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for member, path in image_members():
                if member.isreg():
                    with open(path, "rb") as data:
                        tar.addfile(member, data)
                else:
                    tar.addfile(member)
        process.stdin.close()
    except BrokenPipeError:
        pass  # docker stopped reading: its error message says why
    error = process.stderr.read().decode(errors="replace").strip()
    if process.wait() != 0:
        raise ForgeError(
            f"Forge could not build its Docker sandbox image {tag} from this machine's Python: "
            f"{error or 'no reason given'}.",
            fix="Check that the Docker engine runs and has disk space (`docker info`), or use bubblewrap "
            "(`advisor.sandbox: bubblewrap`, `sudo apt-get install bubblewrap`).",
            code=ErrorCode.SANDBOX_UNAVAILABLE,
        )


def image_members() -> list[tuple[tarfile.TarInfo, Path | None]]:
    """The image's entries (owned by root, readable by everyone), each with the host file it copies."""
    files = set(_stdlib_files()) | set(_libraries())
    entries: dict[str, tuple[tarfile.TarInfo, Path | None]] = {}
    for folder in ("tmp", "work", "etc"):
        entries[folder] = (_info(folder, tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755), None)
    for path in sorted(files):
        _add_with_links(path, entries)
    return [entries[name] for name in sorted(entries)]


def _stdlib_files() -> list[Path]:
    root = stdlib_dir()
    found = []
    for folder, dirs, names in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in _STDLIB_SKIPPED and not d.startswith("config-")]
        found += [Path(folder) / name for name in names]
    return found


def _libraries() -> list[Path]:
    """The interpreter, the files it maps with every extension module loaded, their loader and
    its cache, libpython, and each library's short names (libz.so.1 -> libz.so.1.2.13)."""
    listing = subprocess.run(
        [str(python_path()), "-I", "-S", "-c", _LIST_LIBRARIES], capture_output=True, text=True, timeout=120
    )
    if listing.returncode != 0:
        raise ForgeError(
            f"Forge could not list the shared libraries of {python_path()}: {listing.stderr.strip()[-500:]}",
            fix="Use bubblewrap instead (`advisor.sandbox: bubblewrap`).",
            code=ErrorCode.SANDBOX_UNAVAILABLE,
        )
    mapped = {Path(line) for line in listing.stdout.splitlines() if line and os.path.isfile(line)}
    mapped |= {python_path(), *Path(sys.base_prefix).resolve().glob("lib/libpython*.so*")}
    found = set(mapped)
    for folder in {p.parent for p in mapped if p.suffix != ".py"}:  # names that resolve to a mapped file
        for entry in os.scandir(folder):
            if entry.is_symlink() and Path(os.path.realpath(entry.path)) in mapped:
                found.add(Path(entry.path))
    loaders = [p for p in mapped if p.name.startswith("ld-linux") or p.name.startswith("ld64")]
    for top in ("/lib", "/lib64", "/usr/lib64"):  # where ELF files name the loader (PT_INTERP)
        found |= {Path(top) / p.name for p in loaders if os.path.lexists(Path(top) / p.name)}
    if os.path.isfile("/etc/ld.so.cache"):
        found.add(Path("/etc/ld.so.cache"))
    return sorted(found)


def _add_with_links(path: Path, entries: dict) -> None:
    """``path`` and every link on the way to it (/lib -> usr/lib), with each parent a folder."""
    parts = path.parts[1:]
    for depth in range(1, len(parts) + 1):
        here = Path("/", *parts[:depth])
        name = here.as_posix().lstrip("/")
        if name in entries:
            if entries[name][0].issym():  # an entry that is a link: the rest goes where it points
                target = Path(os.path.normpath(here.parent / os.readlink(here)))
                _add_with_links(target / Path(*parts[depth:]) if depth < len(parts) else target, entries)
                return
            continue
        if here.is_symlink():
            info = _info(name, tarfile.SYMTYPE, 0o777)
            info.linkname = os.readlink(here)
            entries[name] = (info, None)
            target = Path(os.path.normpath(here.parent / info.linkname))  # links on the way kept
            _add_with_links(target / Path(*parts[depth:]) if depth < len(parts) else target, entries)
            return
        if depth < len(parts) or here.is_dir():
            entries[name] = (_info(name, tarfile.DIRTYPE, 0o755), None)
        else:
            executable = os.access(here, os.X_OK)
            info = _info(name, tarfile.REGTYPE, 0o755 if executable else 0o644)
            info.size = here.stat().st_size
            entries[name] = (info, here)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.uname, info.gname = kind, mode, 0, 0, "root", "root"
    return info

