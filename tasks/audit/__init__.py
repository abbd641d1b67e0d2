"""The audit chain, run by the top-level audit.py: scan (sslyze, scan.py; then our own probes,
probes.py and psk_probe.py, over wire.py) -> verdict per port against the resolved policy
(verdict.py) -> mail-log report (logreport.py) -> table and JSON (report.py), with the host
facts it reads (facts.py); once every host of the run is done, one HTML page (html.py) and one
node_exporter textfile (metrics.py) for all of them.

Kept import-free: the pure verdict and log report load without sslyze.
"""
