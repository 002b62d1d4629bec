#!/usr/bin/env bash
# keel and etcd side by side with `keel bench`: a fresh three-member etcd
# (Debian's etcd-server, installed if missing) and a fresh three-member keel
# on loopback (free ports, data under a temporary directory, fsync on, both
# running throughout), the same matrix of `keel bench --json` runs against
# each, alternating etcd and keel row by row, twice. Every run also records
# the members' CPU time per request (utime + stime of the three processes
# from /proc), the leader's RSS and its data directory's size afterwards.
# The result is a markdown section (date, machine, table) appended to
# docs/benchmarks.md.
#
#   bash scripts/bench-vs-etcd.sh                 # full run (~10 minutes)
#   bash scripts/bench-vs-etcd.sh --out FILE      # the section goes to FILE
#   bash scripts/bench-vs-etcd.sh --smoke         # or BENCH_SMOKE=1: one pass,
#       # 1 s per row, written to a temporary file; fails unless every run
#       # made progress without errors (what CI runs)
#   BENCH_SECS=5 BENCH_PASSES=1 ...               # seconds per row (full run: 10),
#                                                 # passes (full run: 2)
#   KEEL_BIN=path/to/keel ...                     # skip the build
#   KEEP_BENCH=1 ...                              # keep the work directory
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

smoke=${BENCH_SMOKE:-}
[[ "$smoke" == 0 ]] && smoke=
out=docs/benchmarks.md
while (($#)); do
    case $1 in
        --smoke) smoke=1 ;;
        --out) out=${2:?--out needs a path}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench-vs-etcd: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v jq >/dev/null || need_apt+=(jq)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq >/dev/null && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
export ETCDCTL_API=3

SCRIPT=bench-vs-etcd KEEP_VAR=KEEP_BENCH
# shellcheck source=scripts/lib/processes.sh
source scripts/lib/processes.sh
keel_bin
# A copy, so a rebuild of target/ during the run changes nothing.
cp "$KEEL_BIN" "$WORK/keel"
KEEL=$WORK/keel

if [[ -n "$smoke" ]]; then
    secs=${BENCH_SECS:-1} passes=1
    out=$(mktemp /tmp/keel-bench-smoke.XXXXXX.md)
else
    secs=${BENCH_SECS:-10} passes=${BENCH_PASSES:-2}
fi

# A loopback port nothing listens on and no member of this run was given.
TAKEN=" "
free_port() {
    local port
    while :; do
        port=$((15000 + RANDOM % 15000))
        [[ "$TAKEN" == *" $port "* ]] && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        TAKEN+="$port "
        echo "$port"
        return
    done
}

# start_cluster TARGET: three members of TARGET (etcd or keel); sets
# <TARGET>_ENDPOINTS (comma-separated), and per member (index 0-2) the
# client address, pid and data directory in <TARGET>_CLIENT/_PID/_DIR.
declare -A CLIENT PID DIR
start_cluster() {
    local target=$1 initial="" i clients=() peers=()
    for i in 0 1 2; do
        clients[i]=127.0.0.1:$(free_port)
        peers[i]=127.0.0.1:$(free_port)
        initial+="${target:0:1}$i=http://${peers[i]},"
    done
    initial=${initial%,}
    for i in 0 1 2; do
        local name=${target:0:1}$i dir=$WORK/data/$target/${target:0:1}$i
        mkdir -p "$dir"
        if [[ $target == etcd ]]; then
            etcd --name "$name" --data-dir "$dir" \
                --listen-client-urls "http://${clients[i]}" --advertise-client-urls "http://${clients[i]}" \
                --listen-peer-urls "http://${peers[i]}" --initial-advertise-peer-urls "http://${peers[i]}" \
                --initial-cluster "$initial" --initial-cluster-token bench-etcd \
                --initial-cluster-state new >"$WORK/$name.log" 2>&1 &
        else
            "$KEEL" serve --name "$name" --data-dir "$dir" \
                --listen-client-urls "http://${clients[i]}" --listen-peer-url "http://${peers[i]}" \
                --initial-cluster "$initial" --initial-cluster-state new \
                --initial-cluster-token bench-keel --log-format text >"$WORK/$name.log" 2>&1 &
        fi
        PIDS+=($!)
        CLIENT[$target$i]=${clients[i]} PID[$target$i]=$! DIR[$target$i]=$dir
    done
    local endpoints
    endpoints=$(IFS=,; echo "${clients[*]}")
    CLIENT[$target]=$endpoints
    for _ in $(seq 1 150); do
        etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "$target cluster at $endpoints did not become healthy"
}

# The index (0-2) of TARGET's leader.
leader_of() {
    local target=$1 endpoint i
    endpoint=$(etcdctl --endpoints="${CLIENT[$target]}" endpoint status -w json |
        jq -r '.[] | select(.Status.header.member_id == .Status.leader) | .Endpoint' | head -1)
    for i in 0 1 2; do
        [[ "${CLIENT[$target$i]}" == "$endpoint" ]] && { echo "$i"; return; }
    done
    fail "$target: no leader among ${CLIENT[$target]} (status said '$endpoint')"
}

# CPU seconds (user + system) TARGET's three members have used.
TICKS=$(getconf CLK_TCK)
cpu_of() {
    local target=$1 i stat fields total=0
    for i in 0 1 2; do
        stat=$(<"/proc/${PID[$target$i]}/stat") || fail "$target member $i is gone"
        read -ra fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The matrix: label | keel bench arguments. Keys of 8 bytes, values of 256
# bytes, 100,000 keys (keel bench's defaults). The last two rows are beyond
# the issue's matrix, so CI's smoke run tries every operation.
ROWS=(
    "put 1/1|put --clients 1 --conns 1"
    "put 100/10|put --clients 100 --conns 10"
    "put 1000/100|put --clients 1000 --conns 100"
    "get linearizable 1/1|get --consistency l --clients 1 --conns 1"
    "get linearizable 100/10|get --consistency l --clients 100 --conns 10"
    "get serializable 1/1|get --consistency s --clients 1 --conns 1"
    "get serializable 100/10|get --consistency s --clients 100 --conns 10"
    "txn CAS 100/10|txn-cas --clients 100 --conns 10"
    "watch 1 writer, 1000 watchers (events)|watch --clients 1 --conns 10 --watchers 1000 --watch-streams 100"
    "range of 100 keys, linearizable 10/2|range --range-keys 100 --clients 10 --conns 2"
    "lease keep-alive, 100 leases 100/10|lease-keepalive --leases 100 --clients 100 --conns 10"
)

echo "== starting a three-member etcd ($(etcd --version | head -1)) and a three-member keel"
start_cluster etcd
start_cluster keel
mkdir -p "$WORK/results"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$SECONDS

for pass in $(seq 1 "$passes"); do
    for r in "${!ROWS[@]}"; do
        label=${ROWS[r]%%|*} args=${ROWS[r]#*|}
        for target in etcd keel; do
            if [[ $args == txn-cas* ]]; then
                # Fresh keys, so every pass's compares fail only on conflicts
                # (txn-cas keys start with "c").
                etcdctl --endpoints="${CLIENT[$target]}" del --prefix c >/dev/null
            fi
            leader=$(leader_of "$target")
            # The leader first: the connections go round-robin over the
            # endpoints from the first, so a 1/1 row talks to the leader on
            # both sides (and the others spread evenly).
            endpoints=${CLIENT[$target$leader]}
            for i in 0 1 2; do
                ((i == leader)) || endpoints+=,${CLIENT[$target$i]}
            done
            cpu_before=$(cpu_of "$target")
            result=$WORK/results/$target-$r-$pass.json
            # shellcheck disable=SC2086 # args is a list of words
            if ! timeout $((secs + 120)) "$KEEL" bench $args --endpoints "$endpoints" \
                --duration "$secs" --json >"$result.raw" 2>"$WORK/bench.err"; then
                fail "$target: keel bench $args failed: $(cat "$WORK/bench.err")"
            fi
            cpu_after=$(cpu_of "$target")
            jq -c --argjson ticks "$((cpu_after - cpu_before))" --argjson hz "$TICKS" \
                --argjson rss "$(rss_kb "${PID[$target$leader]}")" \
                --argjson data "$(du -sk "${DIR[$target$leader]}" | cut -f1)" \
                --arg row "$label" --arg target "$target" --argjson pass "$pass" \
                --argjson leader "$leader" \
                '. + {row: $row, target: $target, pass: $pass, leader: $leader, cpu_s: ($ticks / $hz), leader_rss_kb: $rss, data_kb: $data}' \
                "$result.raw" >"$result"
            printf '%-5s pass %d  %-40s %9.0f ops/s  p50 %s ms  p99 %s ms  errors %s\n' "$target" "$pass" \
                "$label" "$(jq .ops_per_sec "$result")" "$(jq .latency_ms.p50 "$result")" \
                "$(jq .latency_ms.p99 "$result")" "$(jq .errors "$result")"
            if [[ -n "$smoke" ]] && ! jq -e '.ops > 0 and .errors == 0' "$result" >/dev/null; then
                fail "$target: $label: $(jq -c '{ops, errors, error_messages}' "$result")"
            fi
        done
    done
done
took=$((SECONDS - started))

# One table line per row: means over the passes (RSS and data size: after
# the last pass).
row_line() {
    jq -rs --arg row "$1" '
        def mean(f): (map(f) | if length == 0 or any(. == null) then null else add / length end);
        def fmt(n): if n == null then "-" else (n * 100 | round / 100 | tostring) end;
        def int(n): if n == null then "-" else (n | round | tostring) end;
        def lat(f): fmt(mean(f));
        def side: {
            ops: mean(.ops_per_sec),
            lat: "\(lat(.latency_ms.p50)) / \(lat(.latency_ms.p99)) / \(lat(.latency_ms["p99.9"]))",
            cpu_us: mean(.cpu_s * 1e6 / ([.ops, 1] | max)),
            rss: (last.leader_rss_kb / 1024),
            data: (last.data_kb / 1024),
            errors: (map(.errors) | add)
        };
        (map(select(.target == "etcd")) | side) as $e
        | (map(select(.target == "keel")) | side) as $k
        | (group_by(.pass) | map(
              (map(select(.target == "etcd"))[0].ops_per_sec) as $eo
              | (map(select(.target == "keel"))[0].ops_per_sec) as $ko
              | if ($eo // 0) > 0 and $ko != null then fmt($ko / $eo) + "×" else "-" end)) as $runs
        | "| \($row) | \(int($e.ops)) | \(int($k.ops)) | "
          + "\(if ($e.ops // 0) > 0 then fmt($k.ops / $e.ops) + "×" else "-" end)"
          + "\(if ($runs | length) > 1 then " (" + ($runs | join(", ")) + ")" else "" end) | "
          + "\($e.lat) | \($k.lat) | \(int($e.cpu_us)) | \(int($k.cpu_us)) | "
          + "\(int($e.rss)) | \(int($k.rss)) | \(int($e.data)) | \(int($k.data)) | "
          + "\($e.errors) / \($k.errors) |"' -
}

{
    echo
    if [[ -n "$smoke" ]]; then echo "## keel bench smoke run"; else echo "## keel vs etcd with \`keel bench\` (issue 18)"; fi
    echo
    echo "**Setup** — a fresh three-member etcd ($(etcd --version | head -1 | awk '{print $3}'), Debian's"
    echo "etcd-server) and a fresh three-member keel ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), release build) on loopback,"
    echo "both with default settings (fsync on) and both running throughout; \`keel bench\`"
    echo "drives each over its three endpoints (connections round-robin across them, as"
    echo "etcd's \`benchmark\` does, the leader first), alternating etcd and keel row by row, $passes pass(es) of"
    echo "$secs s per row. 8-byte keys, 256-byte values, 100,000-key space. Figures are the"
    echo "mean over the passes; CPU is the three members' user + system time per request"
    echo "(watch: per event delivered); RSS and data size are the leader's after the last"
    echo "pass. Latencies are p50 / p99 / p99.9 in ms (watch: from the put's start to each"
    echo "event). Script: \`scripts/bench-vs-etcd.sh\`."
    echo
    echo "**Machine** — $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)."
    echo "Load average before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg). The bench client and the"
    echo "six members share the machine. **Date** — $(date -u +%Y-%m-%d). Run time: $took s."
    echo
    echo "| row (clients/conns) | etcd ops/s | keel ops/s | keel / etcd (per pass) | etcd latency ms | keel latency ms | etcd CPU µs/req | keel CPU µs/req | etcd leader RSS MB | keel leader RSS MB | etcd data MB | keel data MB | errors etcd / keel |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in "${!ROWS[@]}"; do
        cat "$WORK"/results/*-"$r"-*.json | row_line "${ROWS[r]%%|*}"
    done
    echo
    cat "$WORK"/results/*.json | jq -rs '
        map(select(.op == "txn-cas")) | group_by(.target)
        | map("\(.[0].target) \((map(.cas_failed) | add) * 1000 / ([map(.ops) | add, 1] | max) | round / 10)%")
        | "txn CAS: each client compares and sets keys of its own, deleted before each run, so"
          + " no compare should fail; failed compares, counted in ops/s: \(join(", "))."'
    echo
    cat "$WORK"/results/*.json | jq -rs '
        group_by(.target) | map("\(.[0].target) member \(map(.leader) | unique | join(" then "))")
        | "Leaders: \(join(", ")). Each run lists the leader first in --endpoints, so the"
          + " 1/1 rows talk to the leader only; with more connections they go round-robin over"
          + " all three members, and followers forward writes and linearizable reads."'
    echo
} >>"$out"

echo "== wrote the table to $out"
[[ -n "$smoke" ]] && cat "$out"
echo "bench-vs-etcd: ok ($took s of runs)"
