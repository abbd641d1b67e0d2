"""testhosts/image.py: the recipe's cache keys and the per-suite build quirks (forky)."""

import hashlib

from testhosts import image


def _plain_hash(suite: str) -> str:
    """The recipe hash as it was before suites had quirks."""
    text = "\n".join([image.RECIPE_VERSION, suite, ",".join(image.PACKAGES), image.CUSTOMISE])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_suites_without_quirks_keep_their_cache_keys():
    """Adding forky's quirks must not rebuild (nor orphan) the bookworm and trixie images
    other checkouts on the machine use."""
    for suite in image.SUITES:
        if suite not in image.QUIRKS:
            assert image.recipe_hash(suite) == _plain_hash(suite), suite
    assert set(image.DEFAULT_SUITES) == {"bookworm", "trixie"}


def test_a_quirk_is_part_of_its_suites_key():
    assert image.recipe_hash("forky") != _plain_hash("forky")
    saved = dict(image.QUIRKS)
    try:
        image.QUIRKS["forky"] = image.Quirks(script_fallback="sid", mount_proc=False)
        without_proc = image.recipe_hash("forky")
    finally:
        image.QUIRKS.clear()
        image.QUIRKS.update(saved)
    assert without_proc != image.recipe_hash("forky")


def test_debootstrap_gets_the_fallback_script_only_where_it_has_none(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "DEBOOTSTRAP_SCRIPTS", tmp_path)
    (tmp_path / "sid").touch()
    assert image.debootstrap_script("forky") == [str(tmp_path / "sid")]  # Debian 12's
    (tmp_path / "forky").touch()
    assert image.debootstrap_script("forky") == []  # a debootstrap that knows forky
    assert image.debootstrap_script("trixie") == []


def test_proc_is_only_mounted_when_asked(tmp_path):
    with image._proc_mounted(tmp_path, False):
        assert not (tmp_path / "proc").exists()
