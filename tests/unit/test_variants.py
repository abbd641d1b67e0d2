"""testhosts/variants.py: host specs with variants, and the shaping script they make."""

import pytest

from testhosts import variants


def test_parse_splits_variants_off_the_host_spec():
    assert variants.parse("web1:trixie+legacy465+rsyslog") == (
        "web1:trixie",
        ("legacy465", "rsyslog"),
    )
    assert variants.parse("bookworm") == ("bookworm", ())
    with pytest.raises(ValueError, match="unknown variant"):
        variants.parse("web1+nosuch")


def test_script_sets_the_release_and_ends_with_a_checked_restart():
    script = variants.script(("localconf",), "trixie")
    assert script.startswith("set -eu\nSUITE=trixie\nDOVECOT=2.4\n")
    assert "/etc/dovecot/local.conf" in script
    assert script.rstrip().endswith("systemctl is-active --quiet postfix dovecot")
    assert "DOVECOT=2.3" in variants.script(("miab",), "bookworm")


def test_every_refusing_variant_names_a_file_and_line_its_script_writes():
    for name, (path, line) in variants.REFUSES.items():
        body = variants.VARIANTS[name]
        assert path.rsplit("/", 1)[1] in body and line.split(" = ")[1] in body, name
    assert set(variants.SASL) <= set(variants.VARIANTS)
