"""The environment a stranger gets: every installed package pinned by requirements.lock, the
lock in step with pyproject.toml, and the tests finding names.txt where the pipeline does."""

import os
import re
import shutil
import subprocess
import sys
import tomllib

from conftest import ROOT, names_file, run
from packaging.requirements import Requirement
from packaging.version import Version

LOCK = ROOT / "requirements.lock"


def canonical(name):
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked():
    """{package: version} of requirements.lock."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonical(name)] = version
    return pins


def test_the_lock_pins_every_requirement_of_pyproject_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(spec)
        name = canonical(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not requirements.lock: make lock"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {spec}: make lock"
        )
    assert pins["torch"] == "2.13.0"  # the pin, not a build: +cpu comes from the index


def test_the_environment_is_the_locked_one():
    pins = locked()
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in installed.splitlines():
        name, _, version = line.partition("==")
        name = canonical(name)
        if name in pins:
            assert Version(version).base_version == Version(pins[name]).base_version, name


def test_collection_finds_names_txt_in_the_download_stages_cache(tmp_path):
    """A clone with no ../shared and no ACTGRAD_DATA_CACHE: the user's cache folder, where the
    download stage keeps names.txt; or else one line saying how to get it."""
    clone = tmp_path / "clone" / "actgrad"
    run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("ACTGRAD_DATA_CACHE", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path / "home")
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    out = run(collect, clone, env, check=False)
    assert out.returncode == 4
    cache = tmp_path / "home" / ".cache" / "actgrad"
    assert f"{cache}/names.txt: no such file; `make data` fetches names.txt there" in (
        out.stdout + out.stderr
    )
    cache.mkdir(parents=True)
    shutil.copy2(names_file(), cache / "names.txt")
    out = run(collect, clone, env)
    assert re.search(r"\d+ tests collected", out.stdout), out.stdout
