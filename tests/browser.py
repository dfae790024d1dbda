"""Headless Chromium for the tests of self-contained HTML pages (pattern viewer, dashboards).

``make test`` installs Debian's ``chromium`` package when it is missing, so a test that renders
a page fails (never skips) where no browser can be found: that is a broken set-up, not a
reason to pass. :func:`render` loads a local file with JavaScript enabled, lets its scripts
run, and returns the DOM as the browser built it (what a reader sees, not the file's source);
:func:`screenshot` writes a PNG of the page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium() -> str:
    """The browser's path, or an error that says how to install it."""
    override = os.environ.get("JINTERP_CHROMIUM")
    if override:
        return override
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("No headless Chromium found. `make test` installs Debian's package "
                       "(apt-get install -y chromium); or set JINTERP_CHROMIUM to a browser.")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--allow-file-access-from-files",
               f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def render(page: str | Path, *, budget_ms: int = 5000, timeout: float = 90.0) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``), as a string.

    Args:
        page: path of a local HTML file.
        budget_ms: virtual time the page's scripts get before the DOM is read.
        timeout: wall-clock limit of the browser process, in seconds.
    """
    url = Path(page).resolve().as_uri()
    proc = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    if proc.returncode != 0 or "<html" not in proc.stdout.lower():
        raise RuntimeError(f"Chromium could not render {page} (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return proc.stdout


def screenshot(page: str | Path, out: str | Path, *, width: int = 1200, height: int = 900,
               budget_ms: int = 5000, timeout: float = 90.0) -> Path:
    """Writes a PNG screenshot of the page to ``out`` and returns its path."""
    out = Path(out).resolve()
    url = Path(page).resolve().as_uri()
    proc = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}",
                 "--hide-scrollbars", f"--screenshot={out}", url], timeout)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"Chromium could not screenshot {page} (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return out
