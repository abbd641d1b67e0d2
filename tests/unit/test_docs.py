"""The README documents every setting exactly as tasks/settings.py defines it."""

from pathlib import Path

from tasks.settings import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_generated_from_settings():
    text = README.read_text()
    table = text.split("<!-- settings:begin -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert table == markdown_table(), "run `python -m tasks.settings` and paste it into README.md"


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
        if name in (".gitignore", "bench/results.json") or name.startswith(LISTED_DIRS):
            continue
        if name not in words:
            missing.append(name)
    assert not missing, f"README's Layout section does not name: {missing}"
