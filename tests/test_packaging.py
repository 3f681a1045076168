"""pyproject.toml's ranges, constraints.txt's pins and the wheel's contents agree with each other.

The ranges are what a user's environment may hold; constraints.txt is the one set the README's commands and CI
install. Nothing makes the two agree except this test: a bumped pin outside its range, or a new dependency
without a pin, would otherwise show only on a fresh machine.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: version}; every line must be an exact `name==version` pin."""
    out: dict[str, Version] = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1, f"constraints.txt:{n}: {line!r} is not a pin"
        spec = specs[0]
        assert spec.operator == "==" and "*" not in spec.version, f"constraints.txt:{n}: {line!r} is not a pin"
        assert not req.marker and not req.extras, f"constraints.txt:{n}: {line!r}: a plain pin, please"
        name = canonicalize_name(req.name)
        assert name not in out, f"constraints.txt:{n}: {req.name} pinned twice"
        version = Version(spec.version)
        # `torch==2.13.0+cpu` would refuse the user's CUDA build of 2.13.0; `torch==2.13.0` matches both.
        assert version.local is None, f"constraints.txt:{n}: {line!r}: pin without the local label (+...)"
        out[name] = version
    return out


def direct_requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs + [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]


def test_every_direct_dependency_is_pinned_inside_its_range():
    pinned = pins()
    for req in direct_requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is a dependency but constraints.txt does not pin it"
        assert req.specifier.contains(pinned[name]), f"constraints.txt pins {req.name}=={pinned[name]}, outside {req}"


def test_every_runtime_range_has_a_lower_bound():
    # Without one, a user's old version would be kept and fail at run time instead of at install.
    for req in direct_requirements():
        assert any(s.operator in (">=", "==", "~=") for s in req.specifier), f"{req} has no lower bound"


def test_lowest_python_is_ruffs_target():
    # Ruff must reject syntax the lowest supported Python cannot run.
    lowest = PROJECT["requires-python"].removeprefix(">=").split(",")[0]
    major, minor = lowest.split(".")[:2]
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{major}{minor}"


def test_every_data_file_in_the_package_ships_in_the_wheel():
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["fusechat"]
    package = ROOT / "src" / "fusechat"
    files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]  # numba caches too
    data = [p.relative_to(package).as_posix() for p in files if p.suffix != ".py"]
    assert data, "no data files found: has the package moved?"
    missing = [p for p in data if not any(fnmatch.fnmatch(p, g) for g in globs)]
    assert not missing, f"not matched by [tool.setuptools.package-data] (left out of the wheel): {missing}"


def test_the_licence_ships():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
