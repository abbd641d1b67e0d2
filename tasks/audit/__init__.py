"""The audit chain, run by the top-level audit.py: scan (sslyze, scan.py; then our own probes,
probes.py and psk_probe.py, over wire.py) -> verdict per port against the resolved policy
(verdict.py) -> mail-log report (logreport.py) -> table and JSON (report.py), with the host
facts it reads (facts.py).

Kept import-free: the pure verdict and log report load without sslyze.
"""
