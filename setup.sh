#!/usr/bin/env bash
# One-time setup of a Debian 12/13 controller, as root: system packages, the Python venv with
# the pinned requirements and lint tools, and the cached test-host images (first build ~2 min,
# then cached under /var/cache/mailtls-testhosts). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

packages=(python3 python3-venv openssh-client openssl iproute2 util-linux tar zstd
          debootstrap systemd-container debian-archive-keyring ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# requirements-dev.txt: requirements.txt plus the lint and type-check tools .ci/run uses.
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m testhosts build
