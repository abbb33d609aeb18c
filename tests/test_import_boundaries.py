"""Package boundaries: the registry imports neither the round loop nor the endpoint, the
round loop does not import the endpoint or its web stack, and ``fedsys.serving`` itself
(the registry's old home) stays free of the web stack.

One fresh interpreter imports every module of ``fedsys.registry``, then ``fedsys.serving``,
then every module of ``fedsys.server``, listing ``sys.modules`` after each step: a cycle or
a heavy dependency added anywhere in those packages shows up here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STEPS = {"fedsys.registry": True, "fedsys.serving": False, "fedsys.server": True}  # walk?
IMPORT_STEPS = """
import importlib, json, pkgutil, sys
seen = {}
for package, walk in %r.items():
    root = importlib.import_module(package)
    if walk:
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            importlib.import_module(info.name)
    seen[package] = sorted(sys.modules)
print(json.dumps(seen))
"""
WEB = ("fastapi", "starlette", "uvicorn")


@pytest.fixture(scope="module")
def imported_after() -> dict[str, list[str]]:
    """``sys.modules`` after each step of ``STEPS``, in one fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_STEPS % (STEPS,)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seen: dict[str, list[str]] = json.loads(out.stdout)
    return seen


def under(modules: list[str], *packages: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_the_registry_imports_neither_server_nor_serving(
    imported_after: dict[str, list[str]],
) -> None:
    modules = imported_after["fedsys.registry"]
    assert "fedsys.registry.publisher" in modules
    assert under(modules, "fedsys.server", "fedsys.serving", *WEB) == []


def test_the_serving_package_needs_no_web_stack(imported_after: dict[str, list[str]]) -> None:
    modules = imported_after["fedsys.serving"]
    assert "fedsys.serving" in modules
    assert under(modules, "fedsys.server", *WEB) == []


def test_the_server_does_not_import_the_endpoint(imported_after: dict[str, list[str]]) -> None:
    modules = imported_after["fedsys.server"]
    assert len(under(modules, "fedsys.server")) > 5  # the walk reached the round loop
    endpoint = [m for m in under(modules, "fedsys.serving") if m != "fedsys.serving"]
    assert endpoint == [] and under(modules, "fastapi", "uvicorn") == []
