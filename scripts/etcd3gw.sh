#!/usr/bin/env bash
# etcd3gw (Debian's python3-etcd3gw, installed if missing), a client that
# speaks only etcd's JSON gateway, against a fresh three-member keel cluster
# (`keel cluster`): put, get, prefix, txn, delete, leases, a lock and
# watches, written through one member and read and watched through others.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/keel_cluster.sh
if ! /usr/bin/python3 -c 'import etcd3gw' 2>/dev/null; then
    echo "== installing python3-etcd3gw"
    { apt-get update -qq && apt-get install -y -qq python3-etcd3gw; } >/dev/null 2>&1 ||
        { echo "etcd3gw: cannot install python3-etcd3gw" >&2; exit 1; }
fi
trap keel_cluster_stop EXIT
keel_cluster_start "$(mktemp -d /tmp/keel-etcd3gw.XXXXXX)"
if ! timeout 120 /usr/bin/python3 scripts/apps/etcd3gw_check.py ${KEEL_ENDPOINTS//,/ }; then
    echo "etcd3gw checks failed" >&2
    keel_cluster_log
    exit 1
fi
