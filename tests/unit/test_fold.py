"""The fold scanner (tasks/audit/fold.py) held to sslyze's own answers, one handshake per suite,
against real TLS servers (`openssl s_server`) configured as the test says: the same accepted
suites with the same ephemeral keys for every protocol, the same groups."""

from __future__ import annotations

import pytest
from s_server import s_server
from sslyze import ScanCommand, Scanner

from tasks.audit import scan
from tasks.audit.fold import fold_groups, fold_suites, info_for, reached
from tasks.policy import PORTS

SERVERS = {
    # The deploy's kind: ECDHE and DHE AEAD suites, two groups, the server's order.
    "intermediate": (
        "-cipher",
        "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES256-GCM-SHA384",
        "-ciphersuites",
        "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
        "-groups",
        "X25519:P-384",
        "-serverpref",
    ),
    # A stock server of old: everything OpenSSL 3 still speaks, TLS 1.0 up, the client's order.
    "legacy": ("-cipher", "ALL:@SECLEVEL=0", "-groups", "X25519:P-256:P-521"),
    "tls12_only": ("-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384:AES128-SHA"),
}


def _keyed(result) -> list[tuple]:
    """What a suites result says: each accepted suite with the key exchange it showed."""
    return [
        (
            a.cipher_suite.name,
            a.ephemeral_key and a.ephemeral_key.type_name,
            getattr(a.ephemeral_key, "curve_name", None),
            a.ephemeral_key and a.ephemeral_key.size,
        )
        for a in result.accepted_cipher_suites
    ]


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_the_folds_find_what_sslyze_finds(tmp_path, monkeypatch, server):
    with s_server(tmp_path, *SERVERS[server]) as port:
        monkeypatch.setitem(scan.PORTS, port, PORTS[465])  # implicit TLS, like 465
        info = info_for("mx.test", "127.0.0.1", port, scan._configuration("mx.test", port))
        assert reached(info) is not None
        folded = {c: fold_suites(info, v) for c, v in scan.SUITE_VERSIONS.items()}
        highest = scan._highest({c.value: r for c, r in folded.items()})
        assert highest is not None
        groups = fold_groups(info, highest)
        scanner = Scanner(per_server_concurrent_connections_limit=1)
        commands = set(scan.SUITE_COMMANDS) | {ScanCommand.ELLIPTIC_CURVES}
        scanner.queue_scans([scan._request("mx.test", "127.0.0.1", port, commands)])
        (result,) = scanner.get_results()
    assert result.scan_result is not None, result.connectivity_error_trace
    for command in scan.SUITE_COMMANDS:
        reference = getattr(result.scan_result, command.value).result
        assert _keyed(folded[command]) == _keyed(reference), command
    reference_groups = result.scan_result.elliptic_curves.result
    assert reference_groups is not None and reference_groups.supported_curves
    assert groups.supported_curves is not None
    assert sorted(c.name for c in groups.supported_curves) == sorted(
        c.name for c in reference_groups.supported_curves
    )
    # The test means something: each server accepts suites, and the legacy one old protocols.
    accepted = {c: bool(r.accepted_cipher_suites) for c, r in folded.items()}
    assert accepted[ScanCommand.TLS_1_2_CIPHER_SUITES]
    assert accepted[ScanCommand.TLS_1_0_CIPHER_SUITES] is (server == "legacy")
    assert accepted[ScanCommand.TLS_1_3_CIPHER_SUITES] is (server != "tls12_only")


def test_a_port_without_tls_is_not_reached(tmp_path, monkeypatch):
    """Nothing listens: no fold runs (sslyze's connectivity check says why)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(scan.PORTS, port, PORTS[465])
    info = info_for("mx.test", "127.0.0.1", port, scan._configuration("mx.test", port))
    assert reached(info) is None
