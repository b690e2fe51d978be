#!/usr/bin/env bash
# System set-up for the live-network tests, run by `make test` when it runs as root (CI, the
# Dockerfile and the workflow run exactly this): Debian's Mininet, Open vSwitch, iperf and
# ethtool; Open vSwitch started; Mininet's Python module linked into the virtual environment.
# Idempotent: each step is skipped when already done.
set -euo pipefail
VENV=${1:-.venv}
PACKAGES="mininet openvswitch-switch iperf3 iperf ethtool iputils-ping iproute2 procps"

missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "setup-live: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
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
# leftovers of an earlier crashed rlte run (not `mn -c`: it removes every OVS bridge and /tmp/*.log)
"$VENV/bin/python" -m envs.emulation --clean
