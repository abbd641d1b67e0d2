"""The audit chain, run by the top-level audit.py: scan (sslyze and our own probes, scan.py,
psk_probe.py) -> verdict per port (verdict.py) -> mail-log report (logreport.py) -> table and JSON
(report.py), with the host facts it reads (facts.py).

Kept import-free: tasks.settings reads the port table from verdict.py without loading sslyze.
"""
