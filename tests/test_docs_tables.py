"""Tables in docs/ are generated from the code: these tests fail when a doc drifts from it."""

import re
import subprocess
import sys
from pathlib import Path

from babymerge.merge.registry import METHODS

from conftest import REPO

DOCS = REPO / "docs"


def _table(path: Path, name: str) -> str:
    text = path.read_text()
    match = re.search(rf"<!-- {name}: (.*?) -->\n(.*?)<!-- end of {name} -->", text, re.S)
    assert match, f"{path.name} has no generated {name}"
    return match.group(2)


def test_merging_methods_table_is_the_registrys():
    """docs/merging.md holds exactly what `babymerge methods --markdown` prints,
    one row per registered method with its options and defaults as the functions declare them."""
    table = _table(DOCS / "merging.md", "methods table")
    printed = subprocess.run(
        [sys.executable, "-m", "babymerge", "methods", "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    assert table == printed, "regenerate it: babymerge methods --markdown"
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \|(.*)$", table, re.M)}
    assert sorted(rows) == sorted(METHODS)
    for name, method in METHODS.items():
        for option, default in method.options.items():
            assert f"`{option}={default}`" in rows[name]
