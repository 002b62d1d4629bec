#!/usr/bin/env bash
# Runs the placement-center example (crates/server/examples/placement_center.rs)
# end to end against a fresh three-member keel cluster (`keel cluster`):
# brokers register with leases, elect a controller, the controller dies, its
# registration vanishes and another broker takes over.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/keel_cluster.sh
cargo build --release --example placement_center
trap keel_cluster_stop EXIT
keel_cluster_start "$(mktemp -d /tmp/keel-placement.XXXXXX)"
if ! target/release/examples/placement_center "$KEEL_ENDPOINTS"; then
    echo "placement center example failed" >&2
    keel_cluster_log
    exit 1
fi
