"""Dependency floors stay above the releases with published advisories the service is exposed to."""

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# The last aiohttp advisories (server request smuggling, C parser out-of-bounds read) were fixed in 3.14.3.
FLOORS = {"aiohttp": Version("3.14.3")}


def declared() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def test_floors_exclude_releases_with_known_advisories() -> None:
    reqs = declared()
    for name, floor in FLOORS.items():
        lowest = min(
            (Version(s.version) for s in reqs[name].specifier if s.operator in (">=", "==")), default=None
        )
        assert lowest is not None and lowest >= floor, f"{name}: {reqs[name]} admits releases below {floor}"


def test_the_installed_versions_meet_the_declared_ones() -> None:
    for name, req in declared().items():
        assert req.specifier.contains(version(name), prereleases=True), (name, version(name), str(req))
