"""Accepted cipher suites and groups by folding: offer everything left, take away what the
server picked, repeat until it refuses. A port costs one handshake per accepted suite (or
group) plus one per protocol, instead of sslyze's one per suite it knows (about 160 for TLS 1.2).

The answers are sslyze's own result types (CipherSuitesScanResult, SupportedEllipticCurvesScanResult),
made with sslyze's clients configured the way its plugins configure them (the same nassl OpenSSL
builds, legacy for what only the legacy one speaks, SNI, STARTTLS, timeouts), so scan.port_scan
reads them unchanged and a test holds both scanners to the same answers
(tests/integration/test_audit.py). A server that does not pick from what was offered, or a DH
group sslyze's client refuses to finish, is asked the rest one suite at a time as sslyze does.

    >>> info = info_for("mx.example.org", "10.0.0.2", 465, ServerNetworkConfiguration("mx.example.org"))
    >>> fold_suites(info, TlsVersionEnum.TLS_1_3).accepted_cipher_suites    # doctest: +SKIP
    [CipherSuiteAcceptedByServer(cipher_suite=CipherSuite(name='TLS_CHACHA20_POLY1305_SHA256', ...
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from operator import attrgetter
from typing import TypeVar

from nassl._nassl import OpenSSLError
from nassl.ephemeral_key_info import (
    _OPENSSL_NID_TO_SECG_ANSI_X9_62,
    EcDhEphemeralKeyInfo,
    EphemeralKeyInfo,
    OpenSslEcNidEnum,
)
from nassl.ssl_client import ClientCertificateRequested, SslClient
from sslyze import (
    ClientAuthRequirementEnum,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerTlsProbingResult,
    TlsVersionEnum,
)
from sslyze.errors import (
    ConnectionToServerFailed,
    ServerRejectedTlsHandshake,
    ServerTlsConfigurationNotSupported,
    TlsHandshakeTimedOut,
)
from sslyze.plugins.elliptic_curves_plugin import (
    EllipticCurve,
    SupportedEllipticCurvesScanResult,
)
from sslyze.plugins.openssl_cipher_suites._test_cipher_suite import (
    CipherSuiteAcceptedByServer,
    CipherSuiteRejectedByServer,
    connect_with_cipher_suite,
)
from sslyze.plugins.openssl_cipher_suites._tls12_workaround import (
    WorkaroundForTls12ForCipherSuites,
)
from sslyze.plugins.openssl_cipher_suites.cipher_suites import CipherSuite, CipherSuitesRepository
from sslyze.plugins.openssl_cipher_suites.implementation import CipherSuitesScanResult
from sslyze.server_connectivity import ServerConnectivityInfo, enable_ecdh_cipher_suites

T = TypeVar("T")

# What a refusal looks like: the server has nothing in common with what is left. sslyze counts a
# handshake timeout as a refusal too (servers that ignore a version they do not speak).
REFUSED = (ServerRejectedTlsHandshake, TlsHandshakeTimedOut)
# OpenSSL errors some servers cause when they refuse a group (sslyze's elliptic_curves plugin
# lists the same).
GROUP_REFUSED = (
    "ossl_statem_client_read_transition:unexpected message",
    "wrong curve",
    "sslv3 alert unexpected message",
)
# A connection that failed for another reason (reset, timeout on connect, STARTTLS hiccup) is
# tried again after these pauses; only then is the fold given up as incomplete.
STEP_DELAYS = (0.5, 2.0)
UNSAID_PAUSE = 0.0  # before asking again a server that hung up on a fold step (_refusal)
_PROBED = ServerTlsProbingResult(  # what the fold's connections need of sslyze's probing
    highest_tls_version_supported=TlsVersionEnum.TLS_1_3,
    cipher_suite_supported="",
    client_auth_requirement=ClientAuthRequirementEnum.DISABLED,
    supports_ecdh_key_exchange=True,
)


class FoldIncomplete(Exception):
    """A fold step kept failing for a reason other than the server's refusal."""


class _NotOffered(Exception):
    """The server's pick is not among what was offered (or could not be read back)."""


def info_for(
    server_name: str, ip: str, port: int, configuration: ServerNetworkConfiguration
) -> ServerConnectivityInfo:
    """sslyze's view of one port, for its preconfigured connections (no probing handshake)."""
    return ServerConnectivityInfo(
        server_location=ServerNetworkLocation(hostname=server_name, port=port, ip_address=ip),
        network_configuration=configuration,
        tls_probing_result=_PROBED,
    )


def _step(attempt: Callable[[], T], delays: Iterable[float] = STEP_DELAYS) -> T:
    """attempt(), again after each pause while the connection fails for another reason than a
    refusal; FoldIncomplete after the last."""
    why = ""
    for delay in (0.0, *delays):
        time.sleep(delay)
        try:
            return attempt()
        except REFUSED:
            raise
        except (ConnectionToServerFailed, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"
    raise FoldIncomplete(why)


def reached(info: ServerConnectivityInfo) -> CipherSuitesScanResult | None:
    """The TLS 1.3 fold, which is also the port's connectivity check: None when the port does
    not get as far as a TLS handshake (closed, filtered, STARTTLS refused), without the retries
    of a fold (sslyze's own connectivity check, beside it, says why)."""
    try:
        return fold_suites(info, TlsVersionEnum.TLS_1_3, delays=())
    except FoldIncomplete:
        return None


def _suite_groups(version: TlsVersionEnum) -> list[tuple[bool, list[CipherSuite]]]:
    """sslyze's suites for `version`, split by the client that speaks them (legacy or not), as
    sslyze's connect_with_cipher_suite chooses."""
    suites = sorted(CipherSuitesRepository.get_all_cipher_suites(version), key=attrgetter("name"))
    if version == TlsVersionEnum.TLS_1_3:
        return [(False, suites)]
    if version != TlsVersionEnum.TLS_1_2:
        return [(True, suites)]
    legacy = [
        s
        for s in suites
        if WorkaroundForTls12ForCipherSuites.requires_legacy_openssl(s.openssl_name)
    ]
    modern = [s for s in suites if s not in legacy]
    return [(True, legacy), (False, modern)]


def _pick(
    info: ServerConnectivityInfo, version: TlsVersionEnum, legacy: bool, offered: list[str]
) -> tuple[str, EphemeralKeyInfo | None]:
    """One handshake offering `offered` (OpenSSL names): (the suite the server picked, its key)."""
    conn = info.get_preconfigured_tls_connection(
        override_tls_version=version, should_use_legacy_openssl=legacy
    )
    client = conn.ssl_client
    try:
        if version == TlsVersionEnum.TLS_1_3 and isinstance(client, SslClient):
            client.set_ciphersuites(":".join(offered))
        else:
            client.set_cipher_list(":".join(offered))
        try:
            conn.connect()
        except ClientCertificateRequested:
            pass  # accepted: the server asks for an optional client certificate
        except ServerTlsConfigurationNotSupported as exc:
            # The client would not finish (a DH group too small for it): the server accepted
            # one of them, but which one is not known.
            raise _NotOffered(str(exc)) from exc
        return client.get_current_cipher_name(), client.get_ephemeral_key()
    finally:
        conn.close()


def _timed_out(exc: Exception) -> bool:
    return isinstance(exc, TlsHandshakeTimedOut)


def _unsaid(exc: Exception) -> bool:
    """A refusal without the server's word: a timeout, or a connection closed or reset in the
    handshake (sslyze names those two "rejected" too), not a TLS alert."""
    return isinstance(exc, TlsHandshakeTimedOut) or getattr(exc, "error_message", "") in (
        "Server rejected the connection",
        "Server interrupted the TLS handshake",
    )


def _refusal(exc: Exception, tries: int) -> bool:
    """Whether a fold step's failure ends the fold as the server's refusal. A TLS alert does. A
    handshake the server ended without a word is how Dovecot refuses (it hangs up), but also
    what a server over its limits does to a connection it drops (Dovecot over its login
    process limit): taking that for a refusal would leave the rest of the suites unseen, a
    weak one among them. So it is asked again once, after UNSAID_PAUSE, and then taken as the
    server's answer (sslyze counts those as refusals too). A timeout where nothing was accepted
    yet is not waited out again (a server that ignores a version it does not speak). False:
    paused, ask again."""
    if not _unsaid(exc) or tries >= 1:
        return True
    time.sleep(UNSAID_PAUSE)
    return False


def fold_suites(
    info: ServerConnectivityInfo, version: TlsVersionEnum, delays: Iterable[float] = STEP_DELAYS
) -> CipherSuitesScanResult:
    """Every suite of `version` (as sslyze knows them) the port accepts, by folding; a step
    whose connection fails is tried again after each of `delays`."""
    accepted: list[CipherSuiteAcceptedByServer] = []
    left_over: list[CipherSuite] = []
    for legacy, suites in _suite_groups(version):
        left = {s.openssl_name: s for s in suites}
        unsaid = 0  # steps in a row that ended without the server's word
        while left:
            try:
                name, key = _step(partial(_pick, info, version, legacy, list(left)), delays)
            except REFUSED as exc:
                if (not accepted and _timed_out(exc)) or _refusal(exc, unsaid):
                    break
                unsaid += 1
                continue
            except _NotOffered:
                name = ""
            if name not in left:  # ask the rest one at a time, as sslyze does
                for suite in list(left.values()):
                    one = _step(partial(connect_with_cipher_suite, info, version, suite), delays)
                    if isinstance(one, CipherSuiteAcceptedByServer):
                        accepted.append(one)
                        del left[suite.openssl_name]
                break
            accepted.append(CipherSuiteAcceptedByServer(left.pop(name), key))
            unsaid = 0
        left_over += left.values()
    rejected = [
        CipherSuiteRejectedByServer(s, "not picked when offered with the rest") for s in left_over
    ]
    return CipherSuitesScanResult(
        tls_version_used=version,
        # sslyze's own order, so both scanners' results compare equal
        accepted_cipher_suites=sorted(accepted, key=attrgetter("cipher_suite.name"), reverse=True),
        rejected_cipher_suites=sorted(rejected, key=attrgetter("cipher_suite.name"), reverse=True),
    )


def _curve(nid: OpenSslEcNidEnum) -> EllipticCurve:
    name = _OPENSSL_NID_TO_SECG_ANSI_X9_62.get(nid, f"unknown-curve-with-openssl-id-{nid.value}")
    return EllipticCurve(name=name, openssl_nid=nid.value)


def _pick_group(
    info: ServerConnectivityInfo, version: TlsVersionEnum, offered: list[OpenSslEcNidEnum]
) -> OpenSslEcNidEnum | None:
    """One handshake offering the groups `offered`: the one the server picked (None: refused)."""
    conn = info.get_preconfigured_tls_connection(
        override_tls_version=version, should_use_legacy_openssl=False
    )
    client = conn.ssl_client
    if not isinstance(client, SslClient):
        raise RuntimeError("sslyze gave a legacy client for a group probe")
    try:
        enable_ecdh_cipher_suites(version, client)
        client.set_groups(offered)
        try:
            conn.connect()
        except ClientCertificateRequested:
            pass
        except OpenSSLError as exc:
            if any(text in exc.args[0] for text in GROUP_REFUSED):
                return None
            raise
        key = client.get_ephemeral_key()
    finally:
        conn.close()
    return OpenSslEcNidEnum(key.curve) if isinstance(key, EcDhEphemeralKeyInfo) else None


def fold_groups(
    info: ServerConnectivityInfo, version: TlsVersionEnum
) -> SupportedEllipticCurvesScanResult:
    """Every elliptic-curve group sslyze's client knows that the port accepts at `version` (the
    port's highest, as sslyze's elliptic_curves plugin asks), by folding."""
    left = list(OpenSslEcNidEnum.get_supported_by_ssl_client())
    supported: list[EllipticCurve] = []
    unsaid = 0
    while left:
        try:
            nid = _step(partial(_pick_group, info, version, list(left)))
        except REFUSED as exc:  # as in fold_suites
            if (not supported and _timed_out(exc)) or _refusal(exc, unsaid):
                break
            unsaid += 1
            continue
        if nid is None:
            break
        if nid not in left:
            raise FoldIncomplete(f"the server picked group {nid.name}, which was not offered")
        left.remove(nid)
        supported.append(_curve(nid))
        unsaid = 0
    return SupportedEllipticCurvesScanResult(
        supports_ecdh_key_exchange=True,
        supported_curves=supported,
        rejected_curves=[_curve(nid) for nid in left],
    )
