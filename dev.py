#!/usr/bin/env python3
"""Set up Patron in ./.venv and run one job: ``demo``, ``test`` or any ``patron`` command.

Only the standard library is used here, because this script is what turns a machine with
nothing but Python >= 3.11 into one that can run Patron.

    python3 dev.py demo          # install, then `patron demo`
    python3 dev.py test          # install with dev tools, then ruff, mypy and pytest
    python3 dev.py patron ARGS   # install, then any patron command
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".patron-installed"
WEB = ROOT / "src" / "patron" / "web"
CHROMIUM = Path("/usr/bin/chromium")


def _fingerprint(extras: str) -> str:
    digest = hashlib.sha256(extras.encode())
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def _call(*args: str | Path) -> int:
    return subprocess.run([str(a) for a in args], cwd=ROOT, check=False).returncode


def ensure_installed(*, dev: bool) -> None:
    """Create the virtual environment and install the pinned dependencies once."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3
        sys.exit(f"Patron needs Python >= 3.11; this is {sys.version.split()[0]}")
    extras = ".[dev]" if dev else "."
    wanted = _fingerprint(extras)
    if STAMP.exists() and STAMP.read_text() in {wanted, _fingerprint(".[dev]")}:
        return
    if not (BIN / "python").exists():
        print("Creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing Patron and its pinned dependencies ...", flush=True)
    _run(
        BIN / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-c",
        "constraints.txt",
        "-e",
        extras,
    )
    STAMP.write_text(wanted)


def ensure_web_assets() -> None:
    """The web interface's third-party JS and CSS, from the npm registry (never committed),
    exactly as package-lock.json pins them."""
    stamp = WEB / "node_modules" / ".patron-installed"
    wanted = hashlib.sha256((WEB / "package-lock.json").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: the web interface runs without its charts (install Node.js)")
        return
    print("Installing the web interface's assets from npm ...", flush=True)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=WEB, check=True)
    stamp.write_text(wanted)


def ensure_browser() -> None:
    """Debian's Chromium for the browser tests, installed when we may (as root)."""
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print(
            "Chromium is not installed and cannot be here: the browser tests will skip "
            "(install it with `sudo apt-get install chromium`)",
            flush=True,
        )
        return
    print("Installing Debian's Chromium for the browser tests ...", flush=True)
    quiet = {
        "stdout": subprocess.DEVNULL,
        "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    }
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    if subprocess.run(install, check=False, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, **quiet)
        subprocess.run(install, check=True, **quiet)


def main(argv: list[str]) -> int:
    job = argv[0] if argv else "demo"
    if job == "test":
        ensure_installed(dev=True)
        ensure_web_assets()
        ensure_browser()
        _run(BIN / "ruff", "check", "src", "tests", "benchmarks", "dev.py")
        _run(BIN / "mypy")
        # one worker per core: the suite is mostly database and engine work
        workers = [] if any(a.startswith("-n") for a in argv[1:]) else ["-n", "auto"]
        return _call(BIN / "pytest", *workers, *argv[1:])
    ensure_installed(dev=False)
    ensure_web_assets()
    if job == "demo":
        return _call(BIN / "patron", "demo", *argv[1:])
    if job == "patron":
        return _call(BIN / "patron", *argv[1:])
    sys.exit(f"unknown job {job!r}: use demo, test or patron")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
