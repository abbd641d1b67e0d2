"""One static HTML page for a whole audit run, from the per-host results audit_host() writes as
JSON (pure: dicts in, one string out; report.py writes it).

The page needs nothing but itself: CSS and the SVG bar charts are inline, there is no script,
and it links nowhere, so it can be mailed, archived or opened offline. Everything a host said
(log lines, certificate subjects, peer names, status text) is data: the template escapes it
(autoescape on), and a subject of `<script>` prints as text.

    >>> r = {"host": "mx1", "address": "192.0.2.1", "profile": "intermediate", "ok": False,
    ...      "audited_at": "2026-12-07T15:00:00+00:00", "expected_ports": [25], "ports": [],
    ...      "unscanned_failures": ["port 25 was not scanned"], "warnings": [],
    ...      "certificates": {}, "log_report": {}}
    >>> '<td class="lvl lvl-fail" data-port="25">FAIL</td>' in render([r])
    True
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from tasks.audit import internetnl
from tasks.policy import PORTS

TEMPLATE = "report.html.j2"
# The level of a port, best first: a closed port that may be closed is no finding, so an
# address where it is open outranks it (IPv4 open and checked, IPv6 closed: "ok").
LEVELS = ("closed", "ok", "warn", "fail")
# Bar charts: pixels of one bar; the label column before it.
BAR_WIDTH = 360
LABEL_WIDTH = 220
# Protocols in the order the chart stacks them (newest first), each with its CSS class; any
# other (SSLv3, TLSv1, TLSv1.1) is "old".
PROTOCOL_CLASS = {"TLSv1.3": "p13", "TLSv1.2": "p12"}


def port_level(port: dict) -> str:
    """One scanned port (an entry of the result's `ports`) as ok / warn / fail / closed.

    >>> port_level({"state": "closed", "failures": [], "warnings": ["port 110 (pop3) closed"]})
    'closed'
    >>> port_level({"state": "open", "failures": [], "warnings": ["certificate expires"]})
    'warn'
    """
    if port.get("failures"):
        return "fail"
    if port.get("state") == "closed":
        return "closed"  # its warning only says it is closed: the cell says that already
    return "warn" if port.get("warnings") else "ok"


def worst(levels: list[str]) -> str:
    """The worst of `levels` (LEVELS order); no level at all: 'fail' (nothing was scanned).

    >>> worst(["ok", "closed", "warn"])
    'warn'
    """
    return max(levels, key=LEVELS.index) if levels else "fail"


def host_levels(result: dict) -> dict[int, str]:
    """{port: worst level over the host's addresses}; an expected port not scanned is 'fail'.

    >>> host_levels({"ports": [{"port": 25, "state": "open", "failures": [], "warnings": []}],
    ...              "expected_ports": [25, 465]})
    {25: 'ok', 465: 'fail'}
    """
    by_port: dict[int, list[str]] = {}
    for p in result.get("ports", []):
        by_port.setdefault(p["port"], []).append(port_level(p))
    for port in result.get("expected_ports", []):
        by_port.setdefault(port, [])  # judge_host failed it: "port N was not scanned"
    return {port: worst(levels) for port, levels in by_port.items()}


def fleet_ports(results: list[dict]) -> list[int]:
    """Every port any host of the run has a level for, in the policy's order (25 first).

    >>> fleet_ports([{"ports": [{"port": 993}], "expected_ports": [25]}])
    [25, 993]
    """
    seen = {port for r in results for port in host_levels(r)}
    order = list(PORTS)
    return sorted(seen, key=lambda p: (order.index(p) if p in order else len(order), p))


def days_left(not_after: str, at: str | None) -> int:
    """Whole days from `at` (the result's audited_at; None: now) to a certificate's not_after,
    negative once it has expired.

    >>> days_left("2027-01-31T00:00:00+00:00", "2027-01-01T12:00:00+00:00")
    29
    """
    end = datetime.fromisoformat(not_after)
    start = datetime.fromisoformat(at) if at else datetime.now(UTC)
    return (end - start).days


def certificates(result: dict) -> list[dict]:
    """The host's certificates, one row per certificate served (subject and end) with the
    ports serving it and the days left at the audit's time, soonest end first."""
    rows: dict[tuple[str, str], dict] = {}
    for p in result.get("ports", []):
        c = p.get("certificate")
        if not c:
            continue
        row = rows.setdefault(
            (c["subject"], c["not_after"]),
            c | {"ports": [], "days": days_left(c["not_after"], result.get("audited_at"))},
        )
        if p["port"] not in row["ports"]:
            row["ports"].append(p["port"])
    return sorted(rows.values(), key=lambda r: r["days"])


def segments(parts: list[tuple[str, int, str]], width: int = BAR_WIDTH) -> list[dict]:
    """A stacked bar of `width` pixels from (label, count, css class) parts: each part's x and
    width, in order; parts of 0 are left out.

    >>> [(s["label"], s["x"], s["w"]) for s in segments([("a", 1, "c"), ("b", 3, "c")], 100)]
    [('a', 0.0, 25.0), ('b', 25.0, 75.0)]
    """
    total = sum(n for _, n, _ in parts)
    out, x = [], 0.0
    for label, n, css in parts:
        if n <= 0:
            continue
        w = width * n / total
        out.append({"label": label, "n": n, "css": css, "x": round(x, 2), "w": round(w, 2)})
        x += w
    return out


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def service_rows(log_report: dict) -> list[dict]:
    """Per service of the log report (server services, then the client ones): the
    forward-secrecy bar (forward-secret, not, cipher not logged, plaintext) and the protocol
    bar, each with the text that says the same without colour."""
    services = log_report.get("services", {})
    rows = []
    for name, st in sorted(services.items(), key=lambda kv: ("destinations" in kv[1], kv[0])):
        known = st["sessions"] - st["details_unknown"]
        weak = known - st["forward_secret"]
        fs = segments(
            [
                ("forward-secret", st["forward_secret"], "ok"),
                ("not forward-secret", weak, "fail"),
                ("cipher not logged", st["details_unknown"], "unknown"),
                ("plaintext", st["plaintext"], "fail plain"),
            ]
        )
        fs_text = (
            f"{st['forward_secret']} of {known} forward-secret ({_percent(st['forward_secret'], known)})"
            + (f", {st['details_unknown']} cipher not logged" if st["details_unknown"] else "")
            + (f", {st['plaintext']} plaintext" if st["plaintext"] else "")
            + (f", {st['failed_handshakes']} failed handshakes" if st["failed_handshakes"] else "")
        )
        protocols = sorted(
            st["protocols"].items(),
            key=lambda kv: list(PROTOCOL_CLASS).index(kv[0]) if kv[0] in PROTOCOL_CLASS else 9,
        )
        proto = segments(
            [(p, n, PROTOCOL_CLASS.get(p, "old")) for p, n in protocols]
            + [("plaintext", st["plaintext"], "fail plain")]
        )
        rows.append(
            {
                "name": name,
                "side": "client" if "destinations" in st else "server",
                "fs": fs,
                "fs_text": fs_text,
                "proto": proto,
                "proto_text": ", ".join(f"{s['label']} {s['n']}" for s in proto) or "none",
                "destinations": _destinations(st.get("destinations") or {}),
            }
        )
    return rows


def _destinations(destinations: dict) -> list[dict]:
    """A client service's weak destinations (plaintext or not forward-secret), worst first."""
    rows = []
    for peer, s in destinations.items():
        weak = s["plaintext"] + s["sessions"] - s["details_unknown"] - s["forward_secret"]
        if weak:
            rows.append({"peer": peer, "weak": weak} | s)
    return sorted(rows, key=lambda r: (-r["weak"], r["peer"]))


def suites_text(port: dict) -> str:
    """The accepted suites as the console shows them: how many, then each kind of key exchange.

    >>> suites_text({"suites": [{"kex_type": "ECDH", "group": "X25519", "key_bits": 253}]})
    '1: ECDH X25519 253'
    """
    kinds = sorted(
        {
            " ".join(str(x) for x in (s["kex_type"] or "static", s["group"], s["key_bits"]) if x)
            for s in port.get("suites") or []
        }
    )
    return f"{len(port['suites'])}: " + ", ".join(kinds) if port.get("suites") else "-"


def resumption_text(r: dict) -> str:
    """A port's resumption in one line: TLS 1.2 by session ID and ticket (with the lifetime
    hint), TLS 1.3, and what a psk_ke-only client got.

    >>> resumption_text({"tls12_session_id": False, "tls12_ticket": True,
    ...                  "tls12_lifetime_hint": 4800, "tls13": True})
    '1.2 id:no ticket:yes hint 4800s; 1.3:yes'
    """
    mark = {True: "yes", False: "no", None: "-"}
    hint = f" hint {r['tls12_lifetime_hint']}s" if r.get("tls12_lifetime_hint") else ""
    hint13 = f" hint {r['tls13_lifetime_hint']}s" if r.get("tls13_lifetime_hint") else ""
    psk = f"; psk_ke alone: {r['tls13_psk_ke_only']}" if r.get("tls13_psk_ke_only") else ""
    return (
        f"1.2 id:{mark[r.get('tls12_session_id')]} ticket:{mark[r.get('tls12_ticket')]}{hint}; "
        f"1.3:{mark[r.get('tls13')]}{hint13}{psk}"
    )


def handshake_text(p: dict) -> str:
    """What else the handshakes showed: client-initiated renegotiation, compression, extended
    master secret, secure renegotiation (RFC 5746), whose suite order wins and whether a
    command injected after STARTTLS was answered.

    >>> handshake_text({"client_renegotiation": False, "compression": False,
    ...                 "extended_master_secret": True, "secure_renegotiation": True,
    ...                 "server_order": None, "starttls_injection": False})
    'client reneg: refused; compression: no; EMS: yes; secure reneg: yes; server order: -; STARTTLS injection: no'
    """
    mark = {True: "yes", False: "no", None: "-"}
    reneg = {True: "ACCEPTED", False: "refused", None: "-"}[p.get("client_renegotiation")]
    injection = {True: "ANSWERED", False: "no", None: "-"}[p.get("starttls_injection")]
    return (
        f"client reneg: {reneg}; compression: {mark[p.get('compression')]}; "
        f"EMS: {mark[p.get('extended_master_secret')]}; "
        f"secure reneg: {mark[p.get('secure_renegotiation')]}; "
        f"server order: {mark[p.get('server_order')]}; STARTTLS injection: {injection}"
    )


def _internet_nl(levels: dict[str, str]) -> dict[str, Any]:
    """A port's internet.nl cell: its worst level, that level's CSS class, and the subtests
    that are not a pass (phase-out, insufficient) with their levels.

    >>> _internet_nl({"version": "sufficient", "cert_public_key": "phase-out"})
    {'inl_worst': 'phase-out', 'inl_class': 'warn', 'inl_below': {'cert_public_key': 'phase-out'}}
    """
    worst = internetnl.worst(levels)
    return {
        "inl_worst": worst,
        "inl_class": internetnl.OUTCOME[worst] if worst else "none",
        "inl_below": {k: v for k, v in levels.items() if internetnl.OUTCOME.get(v, "ok") != "ok"},
    }


def _host(result: dict) -> dict[str, Any]:
    ports = [
        p
        | {
            "level": port_level(p),
            "suites_text": suites_text(p),
            "resumption_text": resumption_text(p.get("resumption") or {}),
            "handshake_text": handshake_text(p),
            **_internet_nl(p.get("internet_nl") or {}),
        }
        for p in result.get("ports", [])
    ]
    return {
        "r": result,
        "ports": ports,
        "multi": len(result.get("addresses") or []) > 1,
        "certs": certificates(result),
        "services": service_rows(result.get("log_report") or {}),
    }


def _environment() -> jinja2.Environment:
    # autoescape=True, not select_autoescape(): that keys on ".html", and ours ends in ".j2".
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(results: list[dict], generated_at: str | None = None) -> str:
    """The page for `results` (audit_host() dicts, or the JSON files read back), hosts by name."""
    results = sorted(results, key=lambda r: r["host"])
    ports = fleet_ports(results)
    fleet = [(r, host_levels(r)) for r in results]
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            results=results,
            ports=ports,
            fleet=fleet,
            hosts=[_host(r) for r in results],
            generated_at=generated_at or datetime.now(UTC).isoformat(timespec="seconds"),
            bar_width=BAR_WIDTH,
            label_width=LABEL_WIDTH,
            service_names={p: PORTS[p].service for p in ports if p in PORTS},
        )
    )
