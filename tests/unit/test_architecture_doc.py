"""docs/architecture.md stays true to the code: every path it names exists, and its Modules
table accounts for every module."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
MODULES = DOC.split("## Modules", 1)[1].split("\n## ", 1)[0]
# A folder the table names as a whole (`blanket/store/`) accounts for what is under it.
WHOLE_FOLDERS = [m for m in re.findall(r"`(blanket/[\w/]+/)`", MODULES)]


@pytest.mark.parametrize("path", sorted(set(re.findall(r"`(blanket/[\w./]+)`", DOC))))
def test_every_path_the_document_names_exists(path):
    assert (ROOT / path).exists(), f"docs/architecture.md names {path}, which is gone"


def modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "blanket").rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py"))


@pytest.mark.parametrize("module", modules())
def test_the_modules_table_accounts_for_every_module(module):
    name = module.rsplit("/", 1)[1]
    named = f"`{module}`" in MODULES or f"`{name}`" in MODULES
    in_whole_folder = any(module.startswith(folder) for folder in WHOLE_FOLDERS
                          if folder.count("/") > 2)
    assert named or in_whole_folder, f"the Modules table in docs/architecture.md says " \
                                     f"nothing of {module}"
