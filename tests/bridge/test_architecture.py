"""The standing rules of the layout, checked on the source itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_SDKS = {"slack_bolt", "slack_sdk", "discord", "lark_oapi", "aiohttp_socks"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_bridge_imports_no_platform_sdk() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & PLATFORM_SDKS)
        for path in (ROOT / "bridge").rglob("*.py")
        if imported_modules(path) & PLATFORM_SDKS
    }
    assert offenders == {}


def test_bridge_imports_nothing_from_channels() -> None:
    """The core reaches a channel only through its plugin (an entry point), never by import:
    the contract lives in ``bridge.ports`` and the channels depend on it, not the reverse."""
    offenders = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "bridge").rglob("*.py")
        if "channels" in imported_modules(path)
    }
    assert offenders == set()


def test_no_module_is_over_400_lines() -> None:
    """Small modules with one job each: a module past 400 lines is doing two."""
    long = {
        str(path.relative_to(ROOT)): length
        for package in ("bridge", "channels")
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
        and (length := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_building_the_app_loads_no_platform_sdk_and_starts_nothing() -> None:
    """Importing and building the app with the default config pulls in no platform SDK."""
    script = (
        "import sys, threading\n"
        "from bridge.app import build_app\n"
        "from bridge.settings import load_settings\n"
        "build_app(load_settings())\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(PLATFORM_SDKS)!r})\n"
        "assert not bad, bad\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
