# Sourced by the scripts that start keel (and etcd) processes themselves
# and check what etcdctl prints. Set SCRIPT (the script's short name) and
# KEEP_VAR (the variable that keeps the work directory) before sourcing.
#
#   keel_bin                 sets KEEL_BIN (builds keel in release mode
#                            unless KEEL_BIN is given)
#   WORK, PIDS               a work directory (removed at exit unless
#                            $KEEP_VAR is set) and the processes stopped
#                            at exit
#   fail MESSAGE             prints MESSAGE and the tail of each log in
#                            WORK, and exits 1
#   expect NAME WANT CMD...  runs CMD and compares its output with WANT

keel_bin() {
    KEEL_BIN=${KEEL_BIN:-}
    if [[ -z "$KEEL_BIN" ]]; then
        cargo build --release --bin keel
        KEEL_BIN=target/release/keel
    fi
}

WORK=$(mktemp -d "/tmp/keel-$SCRIPT.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n "${!KEEP_VAR:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "$SCRIPT: FAIL: $*" >&2
    for log in "$WORK"/*.log; do
        echo "--- $log (last 30 lines)" >&2
        tail -30 "$log" >&2 || true
    done
    exit 1
}

expect() {
    local name=$1 want=$2
    shift 2
    local got
    got=$("$@" 2>&1) || fail "$name: \`$*\` failed: $got"
    [[ "$got" == "$want" ]] || fail "$name: \`$*\` printed
$got
but should print
$want"
    echo "ok   $name"
}
