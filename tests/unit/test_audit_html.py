"""The run's HTML page (tasks/audit/html.py): a fleet table with a row per host and a cell per
port at its worst level, host text escaped, nothing fetched from anywhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from auditresults import certificate, log_lines, open_port

from tasks.audit import html
from tasks.audit.verdict import PortScan


class Cells(HTMLParser):
    """The fleet table's rows: [(host, {port: level class})], and every src/href seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, dict[int, str]]] = []
        self.links: list[str] = []
        self._in_fleet = False
        self._in_host_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "table":
            self._in_fleet = "fleet" in (a.get("class") or "")
        elif self._in_fleet and tag == "tr" and a.get("class") == "host":
            self.rows.append(("", {}))
        elif self._in_fleet and tag == "a" and self.rows:
            self._in_host_cell = True
        elif self._in_fleet and tag == "td" and "data-port" in a:
            level = next(c[4:] for c in (a["class"] or "").split() if c.startswith("lvl-"))
            self.rows[-1][1][int(a["data-port"] or 0)] = level

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_fleet = False
        self._in_host_cell = False

    def handle_data(self, data):
        if self._in_host_cell:
            self.rows[-1] = (self.rows[-1][0] + data, self.rows[-1][1])


def parsed(page: str) -> Cells:
    cells = Cells()
    cells.feed(page)
    return cells


def test_fleet_table_has_a_row_per_host_and_a_cell_per_port_at_its_worst(fleet):
    cells = parsed(html.render(fleet))
    assert cells.rows == [
        ("mx1", {25: "warn", 587: "warn", 465: "warn", 143: "warn", 993: "warn"}),
        ("mx2", {25: "fail", 587: "ok", 465: "fail", 143: "ok", 993: "ok"}),
    ]


def test_each_level_has_its_word_too(fleet):
    page = html.render(fleet)
    assert '<td class="lvl lvl-fail" data-port="25">FAIL</td>' in page
    assert '<td class="lvl lvl-ok" data-port="587">ok</td>' in page


def test_closed_optional_port_and_unscanned_expected_port(audit_result):
    r = audit_result(
        "mx3",
        [
            open_port(25, certificate("CN=mx3.example.org")),
            PortScan(port=110, ip="10.0.0.2", service="pop3", state="closed"),
        ],
        expected=(25, 993),
    )
    assert html.host_levels(r) == {25: "ok", 110: "closed", 993: "fail"}
    other = audit_result("mx4", [open_port(25, certificate("CN=mx4.example.org"))], expected=(25,))
    cells = parsed(html.render([r, other]))
    assert cells.rows[1] == ("mx4", {25: "ok", 993: "none", 110: "none"})


def test_worst_over_addresses():
    ports = [
        {"port": 25, "state": "open", "failures": [], "warnings": []},
        {"port": 25, "state": "closed", "failures": [], "warnings": ["closed"]},
        {"port": 993, "state": "open", "failures": [], "warnings": ["w"]},
        {"port": 993, "state": "open", "failures": ["f"], "warnings": []},
    ]
    assert html.host_levels({"ports": ports}) == {25: "ok", 993: "fail"}


def test_host_text_is_escaped(audit_result):
    evil = "<script>alert(1)</script>"
    r = audit_result(
        "mx5",
        [open_port(25, certificate(f"CN={evil}"))],
        lines=log_lines("mx5", peer=f"{evil}[192.0.2.7]:25"),
        expected=(25,),
        certs={"postfix": f"serving {evil}"},
    )
    page = html.render([r])
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # where each came from: the certificate table, the weak destination, the watcher status
    assert "<td>CN=&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;[192.0.2.7]:25</td>" in page
    assert "serving &lt;script&gt;" in page


def test_self_contained(fleet):
    page = html.render(fleet)
    cells = parsed(page)
    assert cells.links and all(link.startswith("#") for link in cells.links)
    assert not re.search(r"(src|href)\s*=\s*[\"']?[a-z]+:", page, re.I)
    assert "http" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_certificate_days_left_against_the_audit_time(fleet):
    mx1 = fleet[0]
    [cert] = html.certificates(mx1)
    assert cert["ports"] == [25, 587, 465, 143, 993]
    assert cert["days"] in (9, 10)  # 10 days after the fixture's NOW, audited a moment later
    at = mx1 | {"audited_at": cert["not_after"].replace("+00:00", "+02:00")}
    assert html.certificates(at)[0]["days"] == 0  # two hours before the end
    page = html.render([at])
    assert '<td class="lvl lvl-warn">0</td>' in page


def test_charts_per_service(fleet):
    rows = html.service_rows(fleet[1]["log_report"])
    assert [(r["name"], r["side"]) for r in rows] == [
        ("dovecot/imap-login", "server"),
        ("postfix/smtpd", "server"),
        ("postfix/smtp", "client"),
    ]
    smtpd = rows[1]
    assert smtpd["fs_text"] == "2 of 3 forward-secret (67%)"
    assert [(s["label"], s["w"]) for s in smtpd["fs"]] == [
        ("forward-secret", 240.0),
        ("not forward-secret", 120.0),
    ]
    assert smtpd["proto_text"] == "TLSv1.3 1, TLSv1.2 2"
    smtp = rows[2]
    assert smtp["fs_text"] == "1 of 1 forward-secret (100%), 1 plaintext"
    assert [d["peer"] for d in smtp["destinations"]] == ["mx.example.net[192.0.2.7]:25"]
    page = html.render(fleet)
    assert page.count("<svg") == 4  # two charts per host


def test_each_port_row_has_its_internet_nl_level_and_the_subtests_below_sufficient(audit_result):
    """RSA 2048 is phase-out there (internet.nl's certificate public key subtest): the port's
    cell says phase-out and names the subtest; a TLS 1.0 port says insufficient."""
    old = PortScan(**{**open_port(25).__dict__, "protocols": ["TLSv1", "TLSv1.2"]})
    page = html.render([audit_result("mx1", [old, open_port(993)])])
    cell = r'<td class="lvl lvl-(\w+)">(good|sufficient|phase-out|insufficient)((?:<br>[^<]*<span class="small">[^<]*</span>)*)</td>'
    rows = re.findall(cell, page)
    assert [(cls, level) for cls, level, _ in rows] == [
        ("fail", "insufficient"),
        ("warn", "phase-out"),
    ]
    assert "version: insufficient" in rows[0][2] and "cert_public_key: phase-out" in rows[1][2]
