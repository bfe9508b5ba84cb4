"""The standing rules of the layout, checked on the source itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def test_bridge_imports_no_platform_channel_module() -> None:
    """The core reaches a platform channel only through entry points, never by import. The web
    channel is the bridge's own (its API builds web messages and serves its page)."""
    offenders = []
    for path in (ROOT / "bridge").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if (
                    parts[0] == "channels"
                    and len(parts) > 1
                    and parts[1] not in ("base", "registry", "web")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert offenders == []


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
