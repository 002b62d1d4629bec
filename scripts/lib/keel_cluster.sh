# Sourced by scripts that need a fresh local three-member keel cluster
# (`keel cluster`: clients on 127.0.0.1:2379, :22379 and :32379).
#
#   keel_cluster_start DIR   builds keel, starts the cluster with its data in
#                            DIR (its log in DIR.log) and waits for a leader
#   keel_cluster_stop        stops it (SIGTERM) and removes DIR and DIR.log
#   keel_cluster_log         the last 50 lines of its log, on stderr

KEEL_ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379

keel_cluster_start() {
    KEEL_CLUSTER_DIR=$1
    cargo build --release --bin keel
    KEEL=$PWD/target/release/keel
    "$KEEL" cluster --fresh --data-dir "$KEEL_CLUSTER_DIR" >"$KEEL_CLUSTER_DIR.log" 2>&1 &
    KEEL_CLUSTER_PID=$!
    for _ in $(seq 1 100); do
        "$KEEL" status --endpoints 127.0.0.1:2379 2>/dev/null | grep -q "leader [0-9a-f]" && return 0
        sleep 0.2
    done
    echo "keel cluster: no leader after 20 s" >&2
    keel_cluster_log
    return 1
}

keel_cluster_stop() {
    [[ -n "${KEEL_CLUSTER_DIR:-}" ]] || return 0
    if [[ -n "${KEEL_CLUSTER_PID:-}" ]]; then
        kill -TERM "$KEEL_CLUSTER_PID" 2>/dev/null || true
        wait "$KEEL_CLUSTER_PID" 2>/dev/null || true
    fi
    # A member killed and left behind by a test.
    pkill -9 -f "keel serve --name keel[0-9] --data-dir $KEEL_CLUSTER_DIR/" 2>/dev/null || true
    rm -rf "$KEEL_CLUSTER_DIR" "$KEEL_CLUSTER_DIR.log"
}

keel_cluster_log() {
    echo "--- keel cluster log (last 50 lines)" >&2
    tail -n 50 "$KEEL_CLUSTER_DIR.log" >&2 || true
}
