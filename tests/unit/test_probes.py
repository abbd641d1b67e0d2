"""The pure parts of tests/probes.py: what counts as TLS policy in a config snapshot, and
reading a handshake from openssl s_client's output."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import probes  # noqa: E402

DOVECOT_24 = """# 2.4.1 (7d1d5a4ab1): /etc/dovecot/dovecot.conf
auth_mechanisms = plain login
local_name mail.mailtls.test {
  ssl_server {
    cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
  }
}
protocol imap {
  imap_metadata = yes
  ssl_cipher_list = ALL
}
ssl_min_protocol = TLSv1.2
ssl_server {
  prefer_ciphers = server
}
login_log_format_elements = user=<%{user}> %{ssl_security}
"""


def test_dovecot_tls_settings_and_blocks_are_left_out():
    assert probes.non_tls_dovecot(DOVECOT_24) == [
        "auth_mechanisms = plain login",
        "local_name mail.mailtls.test {",
        "}",
        "protocol imap {",
        "  imap_metadata = yes",
        "}",
    ]


def test_postfix_tls_options_are_left_out_of_services_only():
    state = {
        "main": [
            "smtpd_tls_ciphers = high",
            "smtpd_sasl_type = dovecot",
            "tls_preempt_cipherlist = yes",
        ],
        "master": [
            "smtps inet n - y - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_sasl_auth_enable=yes "
            "-o syslog_name=postfix/smtps"
        ],
        "params": [],
    }
    assert probes.non_tls_postfix(state) == {
        "main": ["smtpd_sasl_type = dovecot"],
        "master": {
            "smtps/inet": "smtps inet n - y - - smtpd -o smtpd_sasl_auth_enable=yes -o syslog_name=postfix/smtps"
        },
    }


def test_handshake_reads_the_negotiated_protocol_not_the_suites_minimum():
    out = (
        "Server Temp Key: X25519, 253 bits\n---\nNew, TLSv1.0, Cipher is ECDHE-RSA-AES256-SHA\n"
        "SSL-Session:\n    Protocol  : TLSv1.1\n    Cipher    : ECDHE-RSA-AES256-SHA\n"
    )
    assert probes.handshake(out) == (True, "TLSv1.1 ECDHE-RSA-AES256-SHA (X25519, 253 bits)")
    refused = "CONNECTED(00000003)\n40F7:error:0A000102:SSL routines::unsupported protocol\n---\nNew, (NONE), Cipher is (NONE)\n"
    established, detail = probes.handshake(refused)
    assert not established and "unsupported protocol" in detail
