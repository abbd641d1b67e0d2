"""The README documents every setting and profile exactly as tasks/settings.py and
tasks/policy.py define them, and its Layout section matches the tree."""

from pathlib import Path

import pytest

from tasks.tables import TABLES

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("marker", TABLES)
def test_readme_tables_are_generated_from_the_data(marker):
    text = README.read_text()
    table = text.split(f"<!-- {marker}:begin -->\n", 1)[1].split(f"\n<!-- {marker}:end -->", 1)[0]
    assert table == TABLES[marker](), "run `python -m tasks.tables` and paste it into README.md"


ROOT = README.parent
# Directories the Layout section names as a whole (it says what is in them).
LISTED_DIRS = ("files/", "docs/", "testhosts/", "tests/unit/", "tests/integration/")
NOT_SOURCE = {
    ".venv",
    ".venv-ansible",  # made by bench/bench.py --ansible
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "audit-results",
}


def test_readme_layout_lists_every_file():
    """Every source file of the checkout is named in README's Layout section (or lies in a
    directory it describes as a whole)."""
    layout = README.read_text().split("## Layout\n", 1)[1].split("\n```\n", 2)[1]
    words = set(layout.replace(",", " ").replace(";", " ").split())
    missing = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if path.is_dir() or NOT_SOURCE & set(rel.parts) or rel.suffix == ".pyc":
            continue
        name = rel.as_posix()
        if name in (
            ".gitignore",
            "bench/results.json",
            "bench/results-audit.json",
        ) or name.startswith(LISTED_DIRS):
            continue
        if name not in words:
            missing.append(name)
    assert not missing, f"README's Layout section does not name: {missing}"


def test_readme_layout_names_only_files_that_exist():
    """The other way round: every path the Layout section names is in the checkout."""
    layout = README.read_text().split("## Layout\n", 1)[1].split("\n```\n", 2)[1]
    for line in layout.splitlines():
        word = line.split(" ", 1)[0].rstrip(",")
        if word and not line.startswith(" "):
            assert (ROOT / word).exists(), f"README's Layout names {word}, which does not exist"
