"""constraints.txt is the install: every dependency the project declares is pinned there to one exact
version inside the declared range, and this environment (made by `make test` from it) runs those
versions. A dependency added to pyproject.toml without `make upgrade-deps`, or an install that skipped
the constraints, fails here instead of giving the next fresh machine different libraries."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # exactly one "==" per line
        assert spec.operator == "==", line
        pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *(r for group in extras.values() for r in group)]]


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = _pins()
    unpinned = [str(r) for r in _declared() if canonicalize_name(r.name) not in pins]
    assert not unpinned, f"not in constraints.txt (run `make upgrade-deps`): {unpinned}"
    outside = [f"{r} but pinned {pins[canonicalize_name(r.name)]}" for r in _declared()
               if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]  # fmt: skip
    assert not outside, outside


def test_this_environment_runs_the_pinned_versions():
    differ = []
    for name, pinned in _pins().items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            continue  # an extra this set-up does not install (bench)
        if Version(installed.public) != pinned:  # torch's +cpu names the build, not the release
            differ.append(f"{name} {installed} (constraints.txt: {pinned})")
    assert not differ, f"reinstall with `make test` after `rm .venv/.base-installed`: {differ}"
