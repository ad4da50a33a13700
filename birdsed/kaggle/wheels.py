"""Wheels for an offline Kaggle notebook, and a local stand-in for the Kaggle image to prove them.

:func:`ship_wheels` builds the birdsed wheel and downloads, for the target Python and platform, the wheels of
every package the notebook needs that the image (:mod:`birdsed.kaggle.image`) lacks — and of their requirements,
followed one wheel at a time with ``pip download --no-deps`` and checked against the image's versions: a
requirement the image meets is not shipped, one it does not meet (another version) is shipped and said.

:func:`image_environment` makes a fresh virtual environment that sees only the image's packages (those
installed here, linked, with what they require here) — the place where a bundle's dry run shows that nothing
outside the bundle is needed.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from birdsed.errors import BirdsedError
from birdsed.kaggle.image import PACKAGES, marker_environment

log = logging.getLogger(__name__)


class WheelError(BirdsedError):
    """A wheel could not be built or downloaded for the target."""


@dataclass(frozen=True)
class Shipped:
    """One wheel of the bundle and why it is there."""

    name: str
    version: str
    file: str
    reason: str


def _image_version(name: str) -> Version | None:
    version = PACKAGES.get(canonicalize_name(name))
    return None if version is None else Version(version.split("+")[0])  # a local label (+cpu) is not compared


def wheel_metadata(path: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) read from a wheel's METADATA."""
    with zipfile.ZipFile(path) as zf:
        meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise WheelError(f"{path}: not a wheel (no .dist-info/METADATA)")
        msg = Parser().parsestr(zf.read(meta).decode())
    return msg["Name"], msg["Version"], msg.get_all("Requires-Dist") or []


def build_birdsed_wheel(dest: Path) -> Path:
    """Build birdsed's own wheel from its source checkout into `dest`."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise WheelError(
            f"{root}: birdsed is not installed from a source checkout (no pyproject.toml beside the package); "
            "bundle needs the checkout to build its wheel (pip install -e .)"
        )
    before = set(dest.glob("birdsed-*.whl"))
    _pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), str(root)], "building the birdsed wheel")
    built = sorted(set(dest.glob("birdsed-*.whl")) - before) or sorted(dest.glob("birdsed-*.whl"))
    if not built:
        raise WheelError(f"{dest}: pip wheel wrote no birdsed wheel")
    return built[-1]


def _pip(args: list[str], what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
        raise WheelError(f"{what} failed (pip {' '.join(args[:1])}):\n{tail}")


def platform_tags(platform: str) -> list[str]:
    """`platform` and the older tags it runs (pip takes ``--platform`` literally): ``manylinux_2_35_x86_64`` →
    ``manylinux_2_35_x86_64, …, manylinux_2_17_x86_64, manylinux2014_x86_64, manylinux2010_x86_64, manylinux1_x86_64``.
    """
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if m is None:
        return [platform]
    glibc, arch = int(m.group(1)), m.group(2)
    tags = [f"manylinux_2_{v}_{arch}" for v in range(glibc, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{arch}" for v, name in legacy.items() if v <= glibc]


def download_wheel(
    requirement: str, dest: Path, python: str, platform: str, find_links: list[str], no_index: bool = False
) -> Path:
    """One wheel (no dependencies) of `requirement` for the target interpreter and platform."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", tmp]
        args += ["--python-version", python, "--implementation", "cp"]
        for tag in platform_tags(platform):
            args += ["--platform", tag]
        for link in find_links:
            args += ["--find-links", link]
        if no_index:
            args.append("--no-index")
        _pip([*args, requirement], f"downloading {requirement!r} for Python {python} on {platform}")
        files = list(Path(tmp).glob("*.whl"))
        if len(files) != 1:
            raise WheelError(f"pip download {requirement!r} gave {len(files)} wheels")
        target = dest / files[0].name
        target.write_bytes(files[0].read_bytes())
    return target


def ship_wheels(
    needs: list[str],
    dest: Path,
    python: str,
    platform: str,
    find_links: list[str] | None = None,
    no_index: bool = False,
) -> list[Shipped]:
    """The birdsed wheel plus wheels of `needs` the image lacks and their unmet requirements, written to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    birdsed_wheel = build_birdsed_wheel(dest)
    name, version, _ = wheel_metadata(birdsed_wheel)
    shipped = {canonicalize_name(name): Shipped(name, version, birdsed_wheel.name, "birdsed itself")}
    env = marker_environment(python, platform)
    queue = [(Requirement(n), "the notebook imports it") for n in needs]
    while queue:
        req, why = queue.pop(0)
        key = canonicalize_name(req.name)
        if key in shipped or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        have = _image_version(req.name)
        if have is not None and req.specifier.contains(have, prereleases=True):
            continue
        if have is not None:
            why = f"{why}; the image has {have}, which is not {req.specifier}"
            log.warning("%s: shipped beside the image's %s (it shadows it in the notebook)", req, have)
        spec = str(Requirement(f"{req.name}{req.specifier}"))
        path = download_wheel(spec, dest, python, platform, find_links or [], no_index)
        got_name, got_version, requires = wheel_metadata(path)
        shipped[key] = Shipped(got_name, got_version, path.name, why)
        queue += [(Requirement(r), f"{got_name} {got_version} requires it") for r in requires]
    return list(shipped.values())


def _installed() -> dict[str, md.Distribution]:
    found: dict[str, md.Distribution] = {}
    for dist in md.distributions():  # sys.path order: the first of two copies is the one imported
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return found


def image_packages_here() -> dict[str, md.Distribution]:
    """The image's packages installed here, with what they require here (e.g. torch's own libraries)."""
    installed = _installed()
    todo = [name for name in PACKAGES if name in installed]
    chosen: dict[str, md.Distribution] = {}
    while todo:
        name = todo.pop()
        if name in chosen or name not in installed:
            continue
        chosen[name] = installed[name]
        for line in installed[name].requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):  # this interpreter, extras off
                todo.append(canonicalize_name(req.name))
    return chosen


def image_environment(folder: Path) -> tuple[Path, list[str]]:
    """A fresh virtual environment in `folder` whose only packages are the image's, linked from this machine.

    Returns the environment's python and the differences between the image's versions and those linked here
    (``name: image X, here Y``) — what the dry run cannot stand in for.
    """
    env, site = folder / "env", folder / "image-site"
    done = subprocess.run([sys.executable, "-m", "venv", str(env)], capture_output=True, text=True)
    if done.returncode:
        raise WheelError(f"{env}: python -m venv failed: {done.stderr.strip()[-300:]}")
    site.mkdir()
    differences = []
    for name, dist in sorted(image_packages_here().items()):
        root = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or []} - {"..", "__pycache__"}
        for top in sorted(tops):
            if (root / top).exists() and not (site / top).exists():
                (site / top).symlink_to(root / top)
        image = PACKAGES.get(name)
        if image is not None and image.split("+")[0] != dist.version.split("+")[0]:
            differences.append(f"{name}: image {image}, here {dist.version}")
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "kaggle-image.pth").write_text(f"{site}\n")
    return python, differences
