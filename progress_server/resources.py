"""Where the files that ship beside the code live, installed or in a source checkout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(subpackage: str, checkout_dir: str) -> Path:
    # Installed wheels map top-level folders into the package; a source checkout has them
    # beside the package instead.
    spec = importlib.util.find_spec(f"progress_server.{subpackage}")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return _PACKAGE_DIR.parent / checkout_dir


def migrations_dir() -> Path:
    return _data_dir("migrations", "migrations")


def static_dir() -> Path:
    return _data_dir("static", "static")


def templates_dir() -> Path:
    return _PACKAGE_DIR / "templates"
