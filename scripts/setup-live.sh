#!/usr/bin/env bash
# System set-up for the live-network tests, run by `make test` when it runs as root (CI runs
# exactly this): Debian's Mininet, Open vSwitch, iperf and ethtool; Open vSwitch started;
# Mininet's Python module linked into the virtual environment.
#   scripts/setup-live.sh [VENV]                 install, link, start Open vSwitch (default VENV: .venv)
#   scripts/setup-live.sh --install-only [VENV]  install and link only: nothing is started, and
#       package scripts may not start services either (the Dockerfile's build step; the
#       container starts Open vSwitch when it runs, through the first form)
# Idempotent: each step is skipped when already done.
set -euo pipefail
INSTALL_ONLY=0
if [ "${1:-}" = "--install-only" ]; then
    INSTALL_ONLY=1
    shift
fi
VENV=${1:-.venv}
PACKAGES="mininet openvswitch-switch iperf3 iperf ethtool iputils-ping iproute2 procps"

missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "setup-live: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$INSTALL_ONLY" = 1 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        # invoke-rc.d asks this before a package script starts a service: 101 = not now
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

if [ "$INSTALL_ONLY" = 0 ] && ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
    echo "setup-live: starting Open vSwitch"
    /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || \
        /usr/share/openvswitch/scripts/ovs-ctl start
fi

# Mininet's module is installed for Debian's python3 only; link it into the venv's site-packages.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -e "$site/mininet" ]; then
    ln -s /usr/lib/python3/dist-packages/mininet "$site/mininet"
fi
"$VENV/bin/python" -c 'import mininet.net' || { echo "setup-live: mininet does not import in $VENV"; exit 1; }
if [ "$INSTALL_ONLY" = 1 ]; then
    exit 0
fi
# leftovers of an earlier crashed rlte run (not `mn -c`: it removes every OVS bridge and /tmp/*.log)
"$VENV/bin/python" -m envs.emulation --clean
