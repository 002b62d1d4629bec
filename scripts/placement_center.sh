#!/usr/bin/env bash
# Runs the placement-center example (crates/server/examples/placement_center.rs)
# end to end against a fresh three-member keel cluster (`keel cluster`):
# brokers register with leases, elect a controller, the controller dies, its
# registration vanishes and another broker takes over.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin keel --example placement_center
data=$(mktemp -d /tmp/keel-placement.XXXXXX)
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
if ! target/release/examples/placement_center 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379; then
    echo "placement center example failed; cluster log:" >&2
    tail -50 "$data.log" >&2
    exit 1
fi
