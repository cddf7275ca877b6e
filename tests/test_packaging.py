"""Packaging: version ranges in pyproject.toml, exact versions in constraints.txt (inside those
ranges, one for every dependency), and the README's set-up and CI installing with them."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements() -> list[Requirement]:
    p = _project()
    reqs = [Requirement(r) for r in p["dependencies"]]
    reqs += [Requirement(r) for extra in p["optional-dependencies"].values() for r in extra]
    return [r for r in reqs if r.name not in ("opens1", "vllm")]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_dependencies_are_ranges_not_pins():
    for r in _requirements():
        assert not any(s.operator == "==" for s in r.specifier), f"{r} pins an exact version: use a range"
        assert r.specifier, f"{r} has no version range"


def test_every_dependency_has_a_pin_inside_its_range():
    pins = _pins()
    for r in _requirements():
        name = r.name.lower().replace("_", "-")
        assert name in pins, f"{r.name} is missing from constraints.txt"
        assert r.specifier.contains(pins[name], prereleases=True), f"{r.name}=={pins[name]} is outside {r.specifier}"


def test_api_extra_holds_the_clients():
    api = {Requirement(r).name for r in _project()["optional-dependencies"]["api"]}
    assert api == {"openai", "httpx"}
    assert "opens1[api]" in _project()["optional-dependencies"]["dev"]


def test_readme_and_ci_install_with_the_constraints():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    installs = re.findall(r"pip install -e [^&\n]*", readme) + re.findall(r"pip install -e [^&\n]*", ci)
    assert len(installs) >= 3 and all("-c constraints.txt" in i for i in installs), installs
    assert "pip install torch==2.13.0" in ci and "tesseract-ocr" in ci and "bubblewrap" in ci
