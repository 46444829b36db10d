"""The lock files pin every dependency pyproject.toml names, with hashes: `make run`
and `make test` install from them (`--require-hashes`) and the project itself with
`--no-deps`, so a dependency missing from a lock would be missing at run time.
After changing pyproject.toml's dependencies, run `make lock`."""
import json
import re
import tomllib

from tests.support.paths import ROOT


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def pinned(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    pins = dict(re.findall(r"(?m)^([A-Za-z0-9_.\-]+)==(\S+)", text))
    assert all(f"{name}==" in text for name in pins)
    assert text.count("--hash=sha256:") >= len(pins), f"{lock}: every pin needs its hashes"
    return {name.lower().replace("_", "-"): version for name, version in pins.items()}


def test_locks_pin_every_dependency_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, test = pinned("requirements.lock"), pinned("requirements-test.lock")
    assert names(project["dependencies"]) <= set(runtime), "run `make lock`"
    assert names(project["dependencies"] + project["optional-dependencies"]["test"]) <= set(test), "run `make lock`"
    assert all(test[name] == version for name, version in runtime.items()), "the two locks disagree: `make lock`"


def test_no_install_analytics_in_the_npm_locks():
    for folder in ("web", "tests/js"):
        lock = json.loads((ROOT / folder / "package-lock.json").read_text())
        for path, package in lock["packages"].items():
            assert not package.get("hasInstallScript"), f"{folder}: {path} runs code at install"
            assert package.get("name", path.rsplit("node_modules/", 1)[-1]) != "@scarf/scarf", f"{folder}: {path}"


def test_the_image_copies_every_package_the_project_installs():
    """The Dockerfile copies the source folders one by one before `pip install .`: a
    package pyproject.toml includes but the image does not copy would be missing in
    every container (engine/ and common/ were, after the layout change)."""
    included = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in included}
    assert all((ROOT / p / "__init__.py").is_file() for p in packages), packages
    copied = set(re.findall(r"(?m)^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text()))
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"
