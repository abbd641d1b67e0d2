"""Fixtures of the unit tests: audit results as audit_host() returns them (tests/auditresults.py)."""

from auditresults import audit_result, fleet  # noqa: F401 (fixtures, found by name)
