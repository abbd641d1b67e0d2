"""The commit's outbound check on real Debian 12, 13 and 14 hosts: Postfix's own TLS client
(posttls-finger) with each client transport's groups, to the host's port 25, read from its own
packet dump. A client hello over one TCP segment, or one without the hybrid group where it is
due, fails the commit and rolls it back."""

from __future__ import annotations

import re

import pytest

from conftest import PQ_SUITES, run_pyinfra

APPLY = "/usr/local/sbin/mailtls-apply"
VERIFY = "/etc/mailtls/verify.conf"
CURVES = "smtp/unix/tls_eecdh_auto_curves"
# The server's list as the client's (what main.cf alone gave the client before): its only key
# share is the hybrid group's, 1,584-1,588 bytes on Debian 13.
SERVER_LIST = "X25519MLKEM768:X25519:prime256v1:secp384r1"


def commit_client_groups(host, groups: str):
    """Set smtp/unix's groups through mailtls-apply, with verify.conf reading back that value
    (so only the outbound check can object), and commit."""
    return host.ssh(
        f"sed -i 's|^postconf-P {CURVES}=.*|postconf-P {CURVES}={groups}|' {VERIFY} && "
        f"{APPLY} begin postfix /etc/postfix/master.cf && "
        f"postconf -P '{CURVES}={groups}' && "
        f"{APPLY} written postfix /etc/postfix/master.cf && {APPLY} commit postfix",
        check=False,
    )


def test_the_default_deploy_checks_every_client_transport(fresh_host, suite):
    host = fresh_host(suite)
    run_pyinfra(host, "deploy.py")
    lines = host.ssh(f"grep '^outbound ' {VERIFY}").stdout.split("\n")
    offer = "X25519MLKEM768" if suite != "bookworm" else "-"  # OpenSSL 3.0 has none to offer
    assert [x for x in lines if x] == [
        f"outbound smtp/unix 1400 {offer}",
        f"outbound relay/unix 1400 {offer}",
    ]


@pytest.mark.parametrize("pq_suite", PQ_SUITES)
def test_a_client_hello_over_one_segment_fails_the_commit(fresh_host, pq_suite):
    host = fresh_host(pq_suite)
    run_pyinfra(host, "deploy.py")
    before = host.ssh("postconf -P").stdout
    res = commit_client_groups(host, SERVER_LIST)
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"outbound: smtp/unix sends a ClientHello of 1[56]\d\d bytes", res.stderr), (
        res.stderr
    )
    assert "key share X25519MLKEM768" in res.stderr, res.stderr
    assert "rolled back" in res.stderr, res.stderr
    assert host.ssh("postconf -P").stdout == before


@pytest.mark.parametrize("pq_suite", PQ_SUITES)
def test_a_client_that_does_not_offer_the_hybrid_group_fails_where_it_is_due(fresh_host, pq_suite):
    host = fresh_host(pq_suite)
    run_pyinfra(host, "deploy.py")
    res = commit_client_groups(host, "X25519:prime256v1")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "outbound: smtp/unix does not offer X25519MLKEM768" in res.stderr, res.stderr
    assert "rolled back" in res.stderr, res.stderr


@pytest.mark.parametrize("pq_suite", PQ_SUITES)
def test_the_hybrid_share_setting_lifts_the_bound(fresh_host, pq_suite):
    host = fresh_host(pq_suite)
    run_pyinfra(host, "deploy.py", "--data", "mailtls_outbound_pq_share=true")
    assert host.ssh(f"postconf -Ph {CURVES}").stdout.strip() == "DEFAULT"
    assert "outbound smtp/unix 0 X25519MLKEM768" in host.ssh(f"cat {VERIFY}").stdout
    # and back: the bound again, the deferred share
    run_pyinfra(host, "deploy.py")
    assert host.ssh(f"postconf -Ph {CURVES}").stdout.strip() == "?X25519MLKEM768:DEFAULT"
