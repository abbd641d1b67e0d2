"""What the deploy checks beyond its own files: the probes it hands to the host (policy-derived)
and the Dovecot settings elsewhere that would beat its file (pre-flight)."""

import shutil
import subprocess

import pytest

from tasks.dovecot import conf as dovecot_conf
from tasks.policy import HostCaps, resolve
from tasks.safety import verify as verify_conf
from tasks.scripts import script

DEB12 = HostCaps(postfix=(3, 7, 11), dovecot=(2, 3, 19, 1), openssl=(3, 0, 20))
DEB13 = HostCaps(postfix=(3, 10, 13), dovecot=(2, 4, 1), openssl=(3, 5, 9))
DH = "/etc/ssl/mailtls/dh.pem"


def by_port(profile, caps=DEB12):
    out: dict[int, dict[str, verify_conf.Probe]] = {}
    for p in verify_conf.probes(resolve(profile, caps, dh_file=DH)):
        out.setdefault(p.port, {})[p.what] = p
    return out


def test_every_tls_port_of_both_daemons_is_probed():
    ports = by_port("intermediate")
    assert set(ports) == {25, 587, 465, 143, 993, 110, 995}
    assert ports[587]["TLS 1.1"].starttls == "smtp" and ports[465]["TLS 1.1"].starttls is None
    assert ports[143]["TLS 1.1"].starttls == "imap" and ports[110]["TLS 1.1"].starttls == "pop3"
    assert {p.daemon for p in ports[993].values()} == {"dovecot"}


FOLDED = "TLS 1.2 with RSA key exchange, non-AEAD or DHE suites only"
FOLDED_NO_DHE = "TLS 1.2 with RSA key exchange or non-AEAD suites only"
SHA1 = "TLS 1.2 with SHA-1 signature algorithms only"


def test_intermediate_forbids_old_protocols_rsa_kx_cbc_and_dhe():
    for port, found in by_port("intermediate").items():
        refused = {w for w, p in found.items() if p.expect == "refuse"}
        assert refused == {"TLS 1.1", FOLDED, SHA1}, port
        accepted = {w for w, p in found.items() if p.expect == "accept"}
        assert accepted == {"TLS 1.2 with the profile's suites", "TLS 1.3"}, port
        # a refusal must be the server's: the client offers what OpenSSL would not by default
        assert found["TLS 1.1"].args == ("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
        # every forbidden TLS 1.2 class in one handshake: RSA key exchange (any cipher, AEAD
        # too), ECDHE without AEAD, any DHE
        assert found[SHA1].args == (
            "-tls1_2", "-sigalgs", "RSA+SHA1:ECDSA+SHA1", "-cipher", "DEFAULT:@SECLEVEL=0"
        )  # fmt: skip
        assert found[FOLDED].args == (
            "-tls1_2",
            "-cipher",
            "ECDHE:-AESGCM:-CHACHA20:-AESCCM:-ARIAGCM:kRSA:kDHE:@SECLEVEL=0",
        )


def test_legacy_dhe_offers_dhe_so_no_dhe_in_the_forbidden_probe():
    for found in by_port("legacy-dhe").values():
        assert FOLDED not in found
        assert found[FOLDED_NO_DHE].args == (
            "-tls1_2",
            "-cipher",
            "ECDHE:-AESGCM:-CHACHA20:-AESCCM:-ARIAGCM:kRSA:@SECLEVEL=0",
        )
        assert "DHE-RSA-AES128-GCM-SHA256" in found["TLS 1.2 with the profile's suites"].args[-1]


@pytest.mark.parametrize(
    "profile, caps, per_port",
    [
        # TLS 1.1, the forbidden TLS 1.2 suites (one handshake), the profile's TLS 1.2, TLS 1.2
        # signed with SHA-1, TLS 1.3
        ("intermediate", DEB12, dict.fromkeys((25, 587, 465, 143, 993, 110, 995), 5)),
        ("intermediate", DEB13, dict.fromkeys((25, 587, 465, 143, 993, 110, 995), 5)),
        ("legacy-dhe", DEB12, dict.fromkeys((25, 587, 465, 143, 993, 110, 995), 5)),
        # TLS 1.1, TLS 1.2 at all, TLS 1.3 where TLS is mandatory; 25 keeps the intermediate floor
        ("modern", DEB13, {25: 5, **dict.fromkeys((587, 465, 143, 993, 110, 995), 3)}),
    ],
)
def test_handshakes_per_port(profile, caps, per_port):
    """What a commit costs the host: one handshake per line (an openssl client and a Dovecot
    login process or an smtpd each), so the forbidden TLS 1.2 classes share one."""
    found = by_port(profile, caps)
    assert {port: len(p) for port, p in found.items()} == per_port
    assert sum(per_port.values()) == len(verify_conf.probes(resolve(profile, caps, dh_file=DH)))


def _openssl_ciphers(spec: str) -> set[str]:
    out = subprocess.run(["openssl", "ciphers", spec], capture_output=True, text=True, check=True)
    return {c for c in out.stdout.strip().split(":") if not c.startswith("TLS_")}  # TLS 1.3's


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
@pytest.mark.parametrize("dhe", [True, False])
def test_folded_probe_offers_exactly_what_one_probe_per_class_offered(dhe):
    """With this machine's OpenSSL: the folded cipher string selects the union of the three
    classes, no suite more (no ECDHE AEAD suite, which the server may accept) and none less (an
    `!` in it would drop kRSA's and kDHE's GCM suites)."""
    classes = ["kRSA", verify_conf.NON_AEAD] + (["kDHE"] if dhe else [])
    separate = set().union(*(_openssl_ciphers(c + verify_conf.LEGACY_CLIENT) for c in classes))
    folded = _openssl_ciphers(verify_conf.forbidden_tls12(dhe) + verify_conf.LEGACY_CLIENT)
    assert folded == separate
    assert "AES128-GCM-SHA256" in folded and "ECDHE-RSA-AES128-SHA" in folded
    assert ("DHE-RSA-AES128-GCM-SHA256" in folded) == dhe
    assert not {c for c in folded if c.startswith("ECDHE-") and ("GCM" in c or "CHACHA" in c)}


def _apply_function(*names: str) -> str:
    """Shell functions of mailtls-apply as installed, by name (the script itself needs root to
    run)."""
    text = script("mailtls-apply").decode()
    out = []
    for name in names:
        start = text.index(f"\n{name}() {{") + 1
        out.append(text[start : text.index("\n}\n", start) + 3])
    return "".join(out)


@pytest.mark.parametrize(
    "suite, said",
    [
        ("AES256-GCM-SHA384", "TLS 1.2 with RSA key exchange: TLSv1.2 AES256-GCM-SHA384"),
        (
            "AES128-SHA",
            "TLS 1.2 with RSA key exchange and a non-AEAD suite: TLSv1.2 AES128-SHA",
        ),
        (
            "ECDHE-RSA-AES256-SHA384",
            "TLS 1.2 with a non-AEAD suite: TLSv1.2 ECDHE-RSA-AES256-SHA384",
        ),
        (
            "DHE-RSA-AES256-GCM-SHA384",
            "TLS 1.2 with DHE key exchange: TLSv1.2 DHE-RSA-AES256-GCM-SHA384",
        ),
        (
            "DHE-RSA-AES128-SHA",
            "TLS 1.2 with DHE key exchange and a non-AEAD suite: TLSv1.2 DHE-RSA-AES128-SHA",
        ),
    ],
)
def test_an_accepted_forbidden_probe_names_the_class_to_remove(suite, said):
    """mailtls-apply reads the class from the suite the server chose: the folded probe offered
    them all, and the admin must know which one the server enables."""
    output = f"CONNECTION ESTABLISHED\nProtocol version: TLSv1.2\nCiphersuite: {suite}\n"
    script = _apply_function("forbidden_class", "accepted") + f'accepted 993 "{FOLDED}" "$1"\n'
    res = subprocess.run(
        ["sh", "-c", script, "sh", output], capture_output=True, text=True, check=True
    )
    assert res.stdout == f"port 993 accepted {said} (probe: {FOLDED})\n"


def test_other_accepted_probes_keep_their_own_words():
    """TLS 1.1, or TLS 1.2 with an ECDHE AEAD suite where only TLS 1.3 is allowed: no class."""
    script = _apply_function("forbidden_class", "accepted") + 'accepted 587 "$1" "$2"\n'
    for what, proto, suite in [
        ("TLS 1.1", "TLSv1.1", "ECDHE-RSA-AES256-SHA"),
        ("TLS 1.2", "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"),
    ]:
        output = f"CONNECTION ESTABLISHED\nProtocol version: {proto}\nCiphersuite: {suite}\n"
        res = subprocess.run(
            ["sh", "-c", script, "sh", what, output], capture_output=True, text=True, check=True
        )
        assert res.stdout == f"port 587 accepted {what}: {proto} {suite}\n"


def test_modern_refuses_tls12_where_tls_is_mandatory_not_on_25():
    ports = by_port("modern", DEB13)
    for port in (587, 465, 143, 993, 110, 995):
        assert ports[port]["TLS 1.2"].expect == "refuse", port
        assert "TLS 1.2 with the profile's suites" not in ports[port]
    assert ports[25]["TLS 1.2 with the profile's suites"].expect == "accept"
    assert "TLS 1.2" not in ports[25]


def test_verify_file_lines_parse_as_mailtls_apply_reads_them():
    policy = resolve("intermediate", DEB12)
    text = verify_conf.render(
        policy,
        {"tls_ffdhe_auto_groups": "", "smtpd_tls_ciphers": "high"},
        {"smtps/inet/smtpd_tls_security_level": "encrypt"},
        ("smtpd_tls_eecdh_grade",),
        {"ssl_min_protocol": "TLSv1.2"},
    )
    lines = text.splitlines()
    assert "postconf tls_ffdhe_auto_groups=" in lines
    assert "postconf-P smtps/inet/smtpd_tls_security_level=encrypt" in lines
    assert (
        "postconf-X smtpd_tls_eecdh_grade" in lines and "doveconf ssl_min_protocol=TLSv1.2" in lines
    )
    for line in lines:
        if line.startswith("probe "):
            kind, daemon, port, starttls, expect, rest = line.split(" ", 5)
            args, sep, what = rest.partition(" -- ")
            assert sep and what and " " not in what.split()[0] and expect in ("accept", "refuse")
            assert all(" " not in a for a in args.split(" "))
    no_dovecot = verify_conf.render(policy, {}, {}, (), None)
    assert " dovecot " not in no_dovecot and "probe postfix 25 smtp" in no_dovecot


TREE_HEAD = [
    "/etc/dovecot/dovecot.conf:24:!include_try /usr/share/dovecot/protocols.d/*.protocol",
    "/etc/dovecot/dovecot.conf:97:!include conf.d/*.conf",
    "/etc/dovecot/dovecot.conf:101:!include_try local.conf",
    "/etc/dovecot/conf.d/10-auth.conf:122:!include auth-system.conf.ext",
]


def ours(caps=DEB12, profile="intermediate"):
    return dovecot_conf.render(resolve(profile, caps, dh_file=DH), caps)


def test_stock_tree_has_no_override():
    assert dovecot_conf.overrides(ours(), []) == []
    # Debian 13's 10-ssl.conf sets ssl_min_protocol before ours: ours wins
    tree = TREE_HEAD + ["/etc/dovecot/conf.d/10-ssl.conf:47:ssl_min_protocol = TLSv1"]
    assert dovecot_conf.overrides(ours(DEB13), tree) == []


def test_local_conf_after_ours_is_named_with_its_line():
    tree = TREE_HEAD + ["/etc/dovecot/local.conf:3:ssl_cipher_list = ALL:!aNULL:!eNULL:!EXPORT"]
    found = dovecot_conf.overrides(ours(), tree)
    assert len(found) == 1
    assert found[0].startswith(
        "/etc/dovecot/local.conf:3: ssl_cipher_list = ALL:!aNULL:!eNULL:!EXPORT "
        "(read after /etc/dovecot/conf.d/99-mailtls.conf)"
    )
    assert "remove this line" in found[0]


def test_settings_above_the_include_in_dovecot_conf_do_not_win():
    """iRedMail keeps ssl_* in dovecot.conf above `!include conf.d/*.conf`: ours is read later.
    The fact lists a file's !include lines before its settings (two greps): order is by line."""
    tree = [
        "/etc/dovecot/dovecot.conf:107:!include conf.d/*.conf",
        "/etc/dovecot/dovecot.conf:111:!include_try local.conf",
        "/etc/dovecot/dovecot.conf:103:ssl_prefer_server_ciphers = yes",
        "/etc/dovecot/dovecot.conf:106:ssl_cipher_list = EECDH+CHACHA20:EECDH+AESGCM",
    ]
    assert dovecot_conf.overrides(ours(), tree) == []
    below = tree[:1] + ["/etc/dovecot/dovecot.conf:120:ssl_cipher_list = ALL"]
    assert [f.split(": ")[0] for f in dovecot_conf.overrides(ours(), below)] == [
        "/etc/dovecot/dovecot.conf:120"
    ]


def test_a_later_conf_d_file_wins_an_earlier_one_does_not():
    tree = TREE_HEAD + [
        "/etc/dovecot/conf.d/10-ssl.conf:50:ssl_cipher_list = ALL",
        "/etc/dovecot/conf.d/99-zz-site.conf:1:ssl_min_protocol = TLSv1",
    ]
    found = dovecot_conf.overrides(ours(), tree)
    assert [f.split(":")[0] for f in found] == ["/etc/dovecot/conf.d/99-zz-site.conf"]


def test_block_override_wins_wherever_it_is():
    tree = TREE_HEAD + [
        "/etc/dovecot/conf.d/20-imap.conf:3:protocol imap {",
        "/etc/dovecot/conf.d/20-imap.conf:4:  ssl_cipher_list = ALL",
        "/etc/dovecot/conf.d/20-imap.conf:5:}",
        "/etc/dovecot/conf.d/20-imap.conf:7:local_name mail.example.org {",
        "/etc/dovecot/conf.d/20-imap.conf:8:  ssl_min_protocol = TLSv1.1",
        "/etc/dovecot/conf.d/20-imap.conf:9:}",
        "/etc/dovecot/conf.d/20-imap.conf:10:ssl_curve_list = P-256",  # global, before ours
    ]
    found = dovecot_conf.overrides(ours(), tree)
    assert len(found) == 2
    assert "20-imap.conf:4: ssl_cipher_list = ALL (inside 'protocol imap {')" in found[0]
    assert (
        "20-imap.conf:8: ssl_min_protocol = TLSv1.1 (inside 'local_name mail.example.org {')"
        in found[1]
    )


def test_same_value_elsewhere_is_no_override():
    policy = resolve("intermediate", DEB12)
    tree = TREE_HEAD + [
        f"/etc/dovecot/local.conf:1:ssl_cipher_list = {':'.join(policy.tls12_suites)}",
        "/etc/dovecot/local.conf:2:ssl_prefer_server_ciphers = no  # as ours",
    ]
    assert dovecot_conf.overrides(ours(), tree) == []


def test_commented_and_nested_include_order():
    tree = TREE_HEAD + [
        "/etc/dovecot/local.conf:1:!include site/*.conf",
        "/etc/dovecot/site/a.conf:2:ssl_cipher_suites = TLS_AES_128_CCM_SHA256",
    ]
    found = dovecot_conf.overrides(ours(DEB13), tree)
    assert len(found) == 1 and found[0].startswith("/etc/dovecot/site/a.conf:2:")


@pytest.mark.parametrize("key", ["ssl_prefer_server_ciphers", "ssl_server_prefer_ciphers"])
def test_preference_key_of_each_version(key):
    caps = DEB12 if key == "ssl_prefer_server_ciphers" else DEB13
    tree = TREE_HEAD + [f"/etc/dovecot/local.conf:1:{key} = yes"]
    assert len(dovecot_conf.overrides(ours(caps), tree)) == 1


def test_verify_file_is_the_same_before_and_after_the_first_run():
    """The verify file must not rewrite itself on the second run (a no-op run changes nothing)."""
    from tasks.postfix import conf as postfix_conf

    policy = resolve("intermediate", DEB12)
    stock = {"smtp/inet": "smtp inet n - y - - smtpd"}
    first = postfix_conf.render(policy, DEB12, {}, stock, {})
    services = dict(stock, **first.services)
    main = dict(first.main)
    second = postfix_conf.render(policy, DEB12, main, services, dict(first.params))
    assert first.params != second.params  # syslog_name only on the services it creates

    def render(conf):
        return verify_conf.render(
            policy, *verify_conf.stable(conf.main, conf.params), conf.remove, {}
        )

    assert render(first) == render(second)


def test_readback_names_per_version():
    """2.4 keeps ssl_server_* in the ssl_server filter: doveconf must be asked there."""
    assert dovecot_conf.readback(ours(DEB13, "legacy-dhe"))["ssl_server/prefer_ciphers"] == "server"
    assert dovecot_conf.readback(ours(DEB12, "legacy-dhe"))["ssl_prefer_server_ciphers"] == "yes"
    assert "login_log_format_elements" not in dovecot_conf.readback(ours())
