"""The README documents every setting exactly as tasks/settings.py defines it."""

from pathlib import Path

from tasks.settings import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_generated_from_settings():
    text = README.read_text()
    table = text.split("<!-- settings:begin -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert table == markdown_table(), "run `python -m tasks.settings` and paste it into README.md"
