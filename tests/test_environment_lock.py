"""The tested environment is fully pinned: constraints.txt (written by `make lock`) names every
distribution installed in the venv, at the version installed, so a fresh `make setup` reproduces it."""

from __future__ import annotations

import re
import sysconfig
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SELF = "megatron-infi"
# `make setup` upgrades pip itself before installing; everything else is pinned.
TOOLING = {"pip"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[_canonical(name)] = version
    return pins


def test_every_installed_distribution_is_pinned_at_its_version():
    pins = _pins()
    # The venv's own site-packages only: setuptools puts its vendored packages (with their
    # .dist-info) on sys.path once something imports it, and those are not installed packages.
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {
        _canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=site)
        if dist.metadata["Name"]
    }
    installed = {name: v for name, v in installed.items() if name not in TOOLING and name != SELF}
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"installed but not in constraints.txt (run `make lock`): {unpinned}"
    drifted = {name: (pins[name], v) for name, v in installed.items() if pins[name] != v}
    assert not drifted, f"constraints.txt pin vs installed version: {drifted}"


def test_the_hand_chosen_stack_versions_are_kept_by_the_lock():
    """pins.txt holds the versions chosen on purpose (the stack); the lock must agree with them."""
    pins = _pins()
    for line in (REPO / "pins.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert pins.get(_canonical(name)) == version, f"constraints.txt disagrees with pins.txt on {line}"
