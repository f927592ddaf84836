"""README's module tables name every file of the package, and nothing that is gone (#10)."""

from __future__ import annotations

import re

from tests.serverproc import REPO_ROOT

PACKAGE = REPO_ROOT / "progress_server"
# A table's header names its folder: | `engine/` | one job |
HEADER = re.compile(r"^\| `([\w/]+/)` \| one job \|$")
ROW = re.compile(r"^\| `([\w./]+)` \|")


def readme_tables() -> dict[str, set[str]]:
    tables: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        if header := HEADER.match(line):
            current = tables.setdefault(header[1], set())
        elif current is not None and (row := ROW.match(line)):
            current.add(row[1])
        elif not line.startswith("|"):
            current = None
    return tables


def listing(folder: str) -> set[str]:
    path = PACKAGE if folder == "progress_server/" else PACKAGE / folder
    return {
        entry.name + ("/" if entry.is_dir() else "")
        for entry in path.iterdir()
        if entry.name != "__pycache__" and not entry.name.startswith(".")
    }


def test_every_folder_of_the_package_has_its_table() -> None:
    folders = {name for name in listing("progress_server/") if name.endswith("/")}
    assert set(readme_tables()) == {"progress_server/"} | folders


def test_each_table_lists_exactly_its_folder() -> None:
    for folder, rows in readme_tables().items():
        assert rows == listing(folder), folder
