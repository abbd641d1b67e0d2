"""The run's files (report.py): written once, when the last host of the run is done, whole
(renamed into place), where each host's settings say."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.audit import report
from tasks.audit.report import HostDone, host_done, run_file_path, write_atomic


class Run:
    """A stand-in for pyinfra's State: host_done() only keys on it."""


def test_the_page_is_written_when_the_last_host_is_done(fleet, tmp_path):
    run, page, prom = Run(), tmp_path / "report.html", tmp_path / "mailtls_audit.prom"
    mx1, mx2 = fleet
    assert host_done(run, "mx1", HostDone(mx1, page, prom), ["mx1", "mx2"]) == []
    assert not page.exists() and not prom.exists()
    assert host_done(run, "mx2", HostDone(mx2, page, prom), ["mx1", "mx2"]) == [page, prom]
    assert 'mailtls_audit_host_ok{host="mx2"} 0.0' in prom.read_text()
    text = page.read_text()
    assert 'id="row-mx1"' in text and 'id="row-mx2"' in text
    assert oct(page.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_host_that_raised_does_not_hold_the_page_back(fleet, tmp_path):
    run, page = Run(), tmp_path / "report.html"
    host_done(run, "mx1", HostDone(None, page, tmp_path / "m.prom"), ["mx1", "mx2"])
    host_done(run, "mx2", HostDone(fleet[1], page, tmp_path / "m.prom"), ["mx1", "mx2"])
    text = page.read_text()
    assert 'id="row-mx2"' in text and 'id="row-mx1"' not in text


def test_a_host_failed_by_pyinfra_earlier_is_not_waited_for(fleet, tmp_path):
    """--serial: pyinfra drops a failed host from the active ones before the next runs."""
    run, page = Run(), tmp_path / "report.html"
    assert (
        host_done(run, "mx1", HostDone(fleet[0], page, tmp_path / "m.prom"), ["mx1", "mx2"]) == []
    )
    done = host_done(run, "mx2", HostDone(fleet[1], page, tmp_path / "m.prom"), ["mx2"])
    assert done == [page, tmp_path / "m.prom"]
    assert 'id="row-mx1"' in page.read_text()


def test_hosts_naming_different_pages_get_one_each(fleet, tmp_path):
    run, a, b = Run(), tmp_path / "a.html", tmp_path / "b" / "b.html"
    prom = tmp_path / "m.prom"
    host_done(run, "mx1", HostDone(fleet[0], a, prom), ["mx1", "mx2"])
    assert host_done(run, "mx2", HostDone(fleet[1], b, prom), ["mx1", "mx2"]) == [a, b, prom]
    assert 'id="row-mx2"' not in a.read_text() and 'id="row-mx2"' in b.read_text()
    assert 'host="mx1"' in prom.read_text() and 'host="mx2"' in prom.read_text()


def test_where_the_page_goes(monkeypatch, tmp_path):
    json = Path("out/mx1.json")
    monkeypatch.delenv("MAILTLS_AUDIT_HTML", raising=False)
    assert run_file_path(json, None, "MAILTLS_AUDIT_HTML", "report.html") == Path("out/report.html")
    monkeypatch.setenv("MAILTLS_AUDIT_HTML", str(tmp_path))  # an existing directory
    assert run_file_path(json, None, "MAILTLS_AUDIT_HTML", "r.html") == tmp_path / "r.html"
    assert run_file_path(json, "p/x.html", "MAILTLS_AUDIT_HTML", "r.html") == Path("p/x.html")


def test_write_atomic_replaces_the_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "d" / "f.prom"
    write_atomic(path, b"old\n")

    def full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", full)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new\n")
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.prom"]  # no temporary file left
