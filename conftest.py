"""Loaded first by every pytest process of the checkout, the controller and each xdist worker.

pyinfra_cli patches the stdlib for gevent when it is imported (tasks/inventory_source.py uses
its `--data` parser). In an xdist worker the patch would land under execnet's running channel
thread, and the worker's queue then waits on the gevent hub forever (LoopExit). Test processes
stay unpatched; every real pyinfra run the tests make is a CLI subprocess, patched as in use.
"""

from gevent import monkey

monkey.patch_all = lambda *args, **kwargs: True
