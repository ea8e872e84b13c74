# SPDX-License-Identifier: GPL-2.0-or-later
"""The pure cores import no I/O library, directly or through another escd module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "escd"

PURE_MODULES = [
    "escd/errors.py",
    "escd/log.py",
    "escd/model.py",
    "escd/config.py",
    "escd/tokens.py",
    "escd/autolaunch.py",
    "escd/card/*.py",
    "escd/tps/messages.py",
    "escd/tps/framing.py",
    "escd/tps/codec.py",
    "escd/tps/session.py",
    "escd/tps/status.py",
    "escd/phonehome/parser.py",
]

FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "subprocess",
    "threading",
    "smartcard",
    "h11",
    "httpx",
    "httpcore",
    "dbus_fast",
    "systemd",
}


def _pure_files() -> list[Path]:
    files: list[Path] = []
    for pattern in PURE_MODULES:
        files.extend(sorted(ROOT.glob(pattern)))
    return files


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    candidate = ROOT.joinpath(*parts).with_suffix(".py")
    if candidate.exists():
        return candidate
    package = ROOT.joinpath(*parts, "__init__.py")
    return package if package.exists() else None


def _violations(path: Path, seen: set[Path]) -> list[str]:
    if path in seen:
        return []
    seen.add(path)
    found = []
    for module in _imports(path):
        top = module.split(".")[0]
        if top in FORBIDDEN:
            found.append(f"{path.relative_to(ROOT)} imports {module}")
        elif top == "escd":
            target = _module_file(module)
            if target is not None:
                found.extend(_violations(target, seen))
    return found


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io_library(path: Path) -> None:
    assert _violations(path, set()) == []
