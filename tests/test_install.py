"""A non-editable install works: the wheel carries the migrations, templates and static files.

Built from a copy of the sources so that the build's `build/` and `*.egg-info` never land in
the working tree; installed with `--target` and run with the checkout out of reach.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.plainhttp import status_once_up
from tests.serverproc import REPO_ROOT, free_port

_SOURCES = ("pyproject.toml", "README.md", "progress_server", "migrations", "static")


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in _SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif origin.exists():
            shutil.copy2(origin, src / name)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--quiet"]
    if importlib.util.find_spec("wheel") is not None:
        # Offline and quicker: the build backend already installed is good enough here.
        pip.append("--no-build-isolation")
    _run([*pip, "-w", str(out)], cwd=src)
    (built,) = out.glob("progress_server-*.whl")
    return built


def shipped_files(directory: str, suffixes: tuple[str, ...]) -> list[str]:
    folder = REPO_ROOT / directory
    return sorted(p.name for p in folder.iterdir() if p.suffix in suffixes)


def test_wheel_contains_code_migrations_templates_and_static(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "progress_server/migrations/0001_initial.sql" in names
    for migration in shipped_files("migrations", (".sql",)):
        assert f"progress_server/migrations/{migration}" in names
    for template in shipped_files("progress_server/templates", (".html",)):
        assert f"progress_server/templates/{template}" in names
    for asset in shipped_files("static", (".js", ".css", ".svg", ".ico")):
        assert f"progress_server/static/{asset}" in names
    # Every module of the source tree, subpackages included.
    for module in (REPO_ROOT / "progress_server").rglob("*.py"):
        relative = module.relative_to(REPO_ROOT).as_posix()
        assert relative in names, f"{relative} is missing from the wheel"


def test_installed_copy_serves_with_the_checkout_out_of_reach(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    _run([*pip, "--target", str(target), str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    where = _run(
        [sys.executable, "-c", "import progress_server; print(progress_server.__file__)"],
        cwd=elsewhere,
        env=env,
    )
    assert where.stdout.strip().startswith(str(target)), where.stdout

    data = tmp_path / "data"
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "progress_server", "serve", "--port", str(port), "--data-dir", data],
        cwd=elsewhere,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert status_once_up(f"http://127.0.0.1:{port}/healthz", server) == 200
        # The status page renders from the packaged templates.
        assert status_once_up(f"http://127.0.0.1:{port}/", server) == 200
    finally:
        server.terminate()
        server.wait(15)
        log.close()
    assert server.returncode == 0, (tmp_path / "server.log").read_text()


# Modules that run only with an extra installed, by extra.
_EXTRA_MODULES = {
    "postgres": ("progress_server/cluster/", "progress_server/store/postgres"),
}


def test_every_third_party_import_is_a_declared_dependency(wheel: Path) -> None:
    """A fresh install gets only what the wheel declares; an undeclared import (found here
    on the developer's machine) would fail there with ModuleNotFoundError. A package of an
    optional extra (yt-dlp for `[media]`) may only be imported inside functions, where the
    code that needs it runs: a module-level import would break the install without it."""
    metadata = next(
        name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".dist-info/METADATA")
    )
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    declared = {
        _requirement_name(line.split(":", 1)[1])
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    # Packages an optional extra brings (the test extra aside), by extra. One may be
    # imported inside a function, where the code that needs it runs; at module level only
    # in the modules of its extra, which nothing of a plain install imports at load time.
    by_extra: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" in line:
            extra = line.rsplit("extra ==", 1)[1].strip(" '\"")
            if extra != "test":
                by_extra.setdefault(_requirement_name(line.split(":", 1)[1]), set()).add(extra)
    # What the declared packages pull in themselves counts too (yarl comes with aiohttp).
    pending = list(declared)
    while pending:
        try:
            requires = importlib.metadata.requires(pending.pop()) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            name = _requirement_name(requirement)
            if name not in declared:
                declared.add(name)
                pending.append(name)
    distributions = importlib.metadata.packages_distributions()
    missing: dict[str, str] = {}
    for module in (REPO_ROOT / "progress_server").rglob("*.py"):
        tree = ast.parse(module.read_text())
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top in sys.stdlib_module_names or top == "progress_server":
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if dists & declared:
                    continue
                where = module.relative_to(REPO_ROOT).as_posix()
                extras = set().union(*(by_extra.get(d, set()) for d in dists))
                if extras and id(node) not in module_level:
                    continue
                if any(where.startswith(_EXTRA_MODULES.get(e, ())) for e in extras):
                    continue
                missing[top] = where
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_no_module_of_a_plain_install_loads_an_extras_modules() -> None:
    """An extra's modules (which import the extra's packages) are imported lazily, inside
    the functions that need them, so a plain install starts without the extra."""
    extra_modules = {
        prefix.removesuffix("/").replace("/", ".")
        for prefixes in _EXTRA_MODULES.values()
        for prefix in prefixes
    }
    eager: dict[str, str] = {}
    for module in (REPO_ROOT / "progress_server").rglob("*.py"):
        where = module.relative_to(REPO_ROOT).as_posix()
        if any(where.startswith(p) for prefixes in _EXTRA_MODULES.values() for p in prefixes):
            continue
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                if any(name.startswith(extra) for extra in extra_modules):
                    eager[name] = where
    assert not eager, f"loaded at import time by a plain install's modules: {eager}"


def _requirement_name(requirement: str) -> str:
    name = re.split(r"[<>=!~;\[ (]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-")
