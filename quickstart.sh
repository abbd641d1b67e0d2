#!/usr/bin/env bash
# The demo: set up this machine, start local Debian 12 and 13 mail-server test hosts, and run
# the deploy against them over SSH — the same `pyinfra inventory.py deploy.py` you run on
# your own servers (set MAILTLS_HOSTS or MAILTLS_HOSTS_FILE for those).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
.venv/bin/python -m testhosts up bookworm trixie
.venv/bin/pyinfra -y inventory.py deploy.py
