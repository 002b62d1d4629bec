#!/usr/bin/env bash
# etcd3gw (Debian's python3-etcd3gw, installed if missing), a client that
# speaks only etcd's JSON gateway, against a fresh three-member keel cluster
# (`keel cluster`): put, get, prefix, txn, delete, leases, a lock and
# watches, written through one member and read and watched through others.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c 'import etcd3gw' 2>/dev/null; then
    echo "== installing python3-etcd3gw"
    { apt-get update -qq && apt-get install -y -qq python3-etcd3gw; } >/dev/null 2>&1 ||
        { echo "etcd3gw: cannot install python3-etcd3gw" >&2; exit 1; }
fi
cargo build --release --bin keel
data=$(mktemp -d /tmp/keel-etcd3gw.XXXXXX)
target/release/keel cluster --fresh --data-dir "$data" >"$data.log" 2>&1 &
cluster=$!
cleanup() {
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
    rm -rf "$data" "$data.log"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    target/release/keel status --endpoints 127.0.0.1:2379 >/dev/null 2>&1 && break
    sleep 0.2
done
if ! timeout 120 /usr/bin/python3 scripts/apps/etcd3gw_check.py 127.0.0.1:2379 127.0.0.1:22379 127.0.0.1:32379; then
    echo "etcd3gw checks failed; cluster log:" >&2
    tail -50 "$data.log" >&2
    exit 1
fi
