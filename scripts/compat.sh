#!/usr/bin/env bash
# etcd compatibility check: starts a fresh three-member keel cluster, drives it
# with etcdctl (Debian's etcd-client, installed if missing) and checks what it
# prints. The same key-value session also runs against a real etcd (Debian's
# etcd-server) when one is installed or installable, and the two transcripts
# must match line for line (member ids, terms and sizes masked).
#
#   bash scripts/compat.sh            # builds keel in release mode first
#   KEEL_BIN=path/to/keel bash scripts/compat.sh
#   KEEP_COMPAT=1 bash scripts/compat.sh  # keeps the transcripts and logs
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    if ! { apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"; } >/dev/null 2>&1; then
        command -v etcdctl >/dev/null || { echo "compat: cannot install etcd-client" >&2; exit 1; }
        echo "compat: etcd-server not installable; skipping the side-by-side transcript"
    fi
fi
export ETCDCTL_API=3

SCRIPT=compat KEEP_VAR=KEEP_COMPAT
source scripts/lib/processes.sh
keel_bin

# expect_error NAME MESSAGE CMD...: CMD must fail, printing MESSAGE.
expect_error() {
    local name=$1 want=$2
    shift 2
    local got
    if got=$("$@" 2>&1); then fail "$name: \`$*\` succeeded: $got"; fi
    [[ "$got" == *"$want"* ]] || fail "$name: \`$*\` printed
$got
which lacks: $want"
    echo "ok   $name"
}

# Below the ephemeral port range (32768+), so no outgoing connection holds them.
BASE=12379
C1=127.0.0.1:$BASE C2=127.0.0.1:$((BASE + 100)) C3=127.0.0.1:$((BASE + 200))
P1=127.0.0.1:$((BASE + 1)) P2=127.0.0.1:$((BASE + 101)) P3=127.0.0.1:$((BASE + 201))
INITIAL="k1=http://$P1,k2=http://$P2,k3=http://$P3"
ALL="$C1,$C2,$C3"

start_member() { # name client peer initial state
    "$KEEL_BIN" serve --name "$1" --data-dir "$WORK/$1" \
        --listen-client-urls "http://$2" --listen-peer-url "http://$3" \
        --initial-cluster "$4" --initial-cluster-state "$5" \
        --initial-cluster-token compat --log-format text >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
}

wait_healthy() { # endpoints
    for _ in $(seq 1 100); do
        if etcdctl --endpoints="$1" endpoint health >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    fail "cluster at $1 did not become healthy"
}

echo "== starting a three-member keel cluster"
start_member k1 "$C1" "$P1" "$INITIAL" new
start_member k2 "$C2" "$P2" "$INITIAL" new
start_member k3 "$C3" "$P3" "$INITIAL" new
wait_healthy "$ALL"

# The key-value session: the same commands against keel and etcd. Output
# that legitimately differs (ids, terms, sizes, timings) is masked.
session() {
    # Some commands are meant to fail; their errors are part of the transcript.
    set +e
    local e="--endpoints=$1"
    etcdctl "$e" put foo bar
    etcdctl "$e" get foo
    etcdctl "$e" put a/1 v1
    etcdctl "$e" put a/2 v2
    etcdctl "$e" put a/3 v3
    etcdctl "$e" put b b
    etcdctl "$e" get --prefix a/
    etcdctl "$e" get a/1 a/3
    etcdctl "$e" get --from-key a/2 --keys-only
    etcdctl "$e" get --prefix a/ --sort-by=KEY --order=DESCEND --keys-only
    etcdctl "$e" get --prefix a/ --sort-by=MODIFY --order=DESCEND --limit=2
    etcdctl "$e" get --prefix a/ --limit=2 -w json
    echo
    etcdctl "$e" get --prefix a/ --count-only -w json
    echo
    etcdctl "$e" put foo baz --prev-kv
    etcdctl "$e" get foo -w json
    echo
    etcdctl "$e" del --prev-kv a/1
    etcdctl "$e" del nothing-here
    etcdctl "$e" del --prefix a/
    printf 'value("foo") = "baz"\n\nput foo qux\nget b\n\nput foo nope\n\n' | etcdctl "$e" txn
    printf 'version("foo") > "5"\n\nput foo yes\n\nget foo\ndel b\n\n' | etcdctl "$e" txn
    printf 'mod("foo") < "100"\ncreate("foo") = "2"\n\nget foo\n\n\n' | etcdctl "$e" txn
    etcdctl "$e" get foo --rev=2
    etcdctl "$e" compaction 4
    etcdctl "$e" get foo --rev=3 2>&1 | grep -v retry_interceptor
    etcdctl "$e" get foo --rev=4
    etcdctl "$e" get foo --rev=1000 2>&1 | grep -v retry_interceptor
    etcdctl "$e" put "" x 2>&1 | grep -v retry_interceptor
    etcdctl "$e" compaction 3 2>&1 | grep -v retry_interceptor
    # etcd's duplicate-key check takes a from-key delete's "\0" literally.
    printf '\ndel zz --from-key\nput zz/1 v\n\n\n' | etcdctl "$e" txn
    printf '\ndel zz --prefix\nput zz/2 v\n\n\n' | etcdctl "$e" txn 2>&1 | grep -v retry_interceptor
    # The responses inside a txn carry only the revision as of each operation.
    printf '\ndel missing\nget foo\nput zz/3 v\nget foo\ndel zz/1\n\n\n' | etcdctl "$e" txn -w json
    echo
    etcdctl "$e" get "" --from-key --keys-only
    # Watches: history (from the compaction point) with previous versions, a
    # compacted start, and live.
    timeout 2 etcdctl "$e" watch --prefix a/ --rev=4 --prev-kv
    timeout 2 etcdctl "$e" watch foo --rev=2 2>&1 | grep -v retry_interceptor
    timeout 2 etcdctl "$e" watch b a 2>&1 | grep -v retry_interceptor
    timeout 2 etcdctl "$e" watch b --rev=-3 2>&1 | grep -v retry_interceptor
    # The txn above put zz/3 before deleting zz/1: history replays a
    # revision's changes in the order they were made.
    timeout 2 etcdctl "$e" watch --prefix zz/ --rev=12
    # Interactive watches: two on one stream, then a progress request that
    # both of them answer.
    { printf 'watch a/ --prefix --rev=4\n'; sleep 1; printf 'watch b\nprogress\n'; sleep 1; } |
        etcdctl "$e" watch -i 2>&1 | grep -v "reading watch request line: EOF" || true
    # Leases: limits and errors, keys attached, time to live with keys,
    # keep-alive, list, revoke, and expiry deleting a key (a watcher sees
    # the delete). Lease IDs differ between runs: they are masked.
    leases "$e" 2>&1 | grep -v retry_interceptor |
        sed -E 's/lease [0-9a-f]{6,}/lease L/; s/^[0-9a-f]{10,}$/ID/'
    # Locks and elections with contending etcdctl processes.
    coordination "$e" 2>&1 | sed -E 's/[0-9a-f]{10,}/ID/'
    local live
    live=$(mktemp "$WORK/live.XXXXXX")
    timeout 3 etcdctl "$e" watch --prefix live/ --prev-kv >"$live" 2>&1 &
    sleep 1
    etcdctl "$e" put live/a 1
    etcdctl "$e" put live/a 2
    etcdctl "$e" del live/a
    wait
    cat "$live"
    # etcd's JSON gateway on the same port, through curl.
    gateway "http://${1%%,*}" 2>&1 | sed -E 's/"ID":"[0-9]+"/"ID":"L"/g'
}

# post PATH JSON: a gateway call, its HTTP status after the body.
post() { curl -s -w ' %{http_code}\n' -X POST "$GW$1" -d "$2"; }

gateway() {
    GW=$1
    curl -s -w ' %{http_code}\n' "$GW/health"
    # base64: "gw/1" Z3cvMQ==, "gw/2" Z3cvMg==, "gw/" Z3cv, "gw0" Z3cw, "1" MQ==
    post /v3/kv/put '{"key":"Z3cvMQ==","value":"MQ=="}'
    post /v3/kv/put '{"key":"Z3cvMg==","value":"MQ==","prevKv":true}'
    post /v3/kv/range '{"key":"Z3cv","range_end":"Z3cw","sortOrder":"DESCEND","sort_target":"KEY"}'
    post /v3/kv/range '{"key":"Z3cv","rangeEnd":"Z3cw","count_only":true,"limit":"1"}'
    post /v3/kv/txn '{"compare":[{"key":"Z3cvMQ==","result":"EQUAL","target":"VALUE","value":"MQ=="},{"key":"Z3cvMg==","result":0,"target":0,"version":"1"}],"success":[{"requestPut":{"key":"Z3cvMQ==","value":"Mg=="}},{"request_range":{"key":"Z3cvMQ=="}}]}'
    post /v3/kv/deleterange '{"key":"Z3cvMg==","prev_kv":true}'
    post /v3/kv/range '{}'
    post /v3/kv/put '{"key":"Z3cvMQ==","lease":"12345"}'
    post /v3/kv/range '{"key":"Z3cvMQ==","revision":"100000"}'
    post /v3/lease/grant '{"TTL":"99999999999"}'
    post /v3/lease/revoke '{"ID":"12345"}'
    post /v3/lease/timetolive '{"ID":"12345"}'
    post /v3/kv/compaction '{"revision":"1"}'
    post /v3/kv/range '{"key":"Z3cvMQ==","revision":"1"}'
    timeout 2 curl -s -N -X POST "$GW/v3/watch" -d '{"create_request":{"key":"Z3cv","range_end":"Z3cw","start_revision":"30","prev_kv":true}}'
    echo
}
leases() {
    local e=$1 id
    etcdctl "$e" lease grant 60
    etcdctl "$e" lease grant 0
    etcdctl "$e" lease grant 9000000001
    etcdctl "$e" lease timetolive 123
    etcdctl "$e" lease revoke 123
    etcdctl "$e" lease keep-alive --once 123
    etcdctl "$e" put --lease=123 k v
    id=$(etcdctl "$e" lease grant 30 | awk '{print $2}')
    etcdctl "$e" put --lease="$id" lk v
    etcdctl "$e" put --lease="$id" lk2 v
    etcdctl "$e" put lk2 detached
    etcdctl "$e" lease timetolive --keys "$id"
    etcdctl "$e" lease keep-alive --once "$id"
    etcdctl "$e" lease list
    etcdctl "$e" lease revoke "$id"
    etcdctl "$e" get lk
    etcdctl "$e" get lk2
    etcdctl "$e" lease timetolive "$id"
    id=$(etcdctl "$e" lease grant 2 | awk '{print $2}')
    local watched
    watched=$(mktemp "$WORK/expiry.XXXXXX")
    timeout 6 etcdctl "$e" watch expiring >"$watched" 2>&1 &
    sleep 0.5
    etcdctl "$e" put --lease="$id" expiring v
    sleep 4.5
    etcdctl "$e" get expiring
    etcdctl "$e" lease timetolive "$id"
    wait
    cat "$watched"
}
coordination() {
    local e=$1 observed first second
    etcdctl "$e" lock jobs -- sh -c 'echo first holds; sleep 1; echo first done' &
    sleep 0.3
    etcdctl "$e" lock jobs -- sh -c 'echo second holds'
    wait
    observed=$(mktemp "$WORK/observed.XXXXXX")
    first=$(mktemp "$WORK/first.XXXXXX")
    second=$(mktemp "$WORK/second.XXXXXX")
    timeout 3 etcdctl "$e" elect -l controller >"$observed" &
    sleep 0.3
    timeout 1.2 etcdctl "$e" elect controller alice >"$first" &
    sleep 0.3
    timeout 2 etcdctl "$e" elect controller bob >"$second" &
    wait
    echo "-- alice"
    cat "$first"
    echo "-- bob"
    cat "$second"
    echo "-- observer"
    cat "$observed"
}
mask() {
    sed -E 's/"cluster_id":"?[0-9]+"?/"cluster_id":C/g; s/"member_id":"?[0-9]+"?/"member_id":M/g; s/"raft_term":"?[0-9]+"?/"raft_term":T/g'
}

echo "== key-value session against keel (through a follower and the leader alike)"
session "$ALL" 2>&1 | mask >"$WORK/keel.transcript"

if command -v etcd >/dev/null; then
    echo "== the same session against etcd $(etcd --version | head -1 | awk '{print $3}')"
    etcd --name ref --data-dir "$WORK/etcd" \
        --listen-client-urls http://127.0.0.1:12979 --advertise-client-urls http://127.0.0.1:12979 \
        --listen-peer-urls http://127.0.0.1:12980 --initial-advertise-peer-urls http://127.0.0.1:12980 \
        --initial-cluster ref=http://127.0.0.1:12980 >"$WORK/etcd.log" 2>&1 &
    PIDS+=($!)
    wait_healthy 127.0.0.1:12979
    session 127.0.0.1:12979 2>&1 | mask >"$WORK/etcd.transcript"
    if ! diff -u "$WORK/etcd.transcript" "$WORK/keel.transcript"; then
        fail "keel's transcript differs from etcd's (above: - etcd, + keel)"
    fi
    echo "ok   transcript identical to etcd's ($(wc -l <"$WORK/keel.transcript") lines)"
    ETCD_AUTH_ENDPOINT=127.0.0.1:12979
else
    grep -q "^SUCCESS" "$WORK/keel.transcript" || fail "txn did not succeed: $(cat "$WORK/keel.transcript")"
fi

echo "== checks against keel"
expect "put via a follower" OK etcdctl --endpoints="$C2" put via-follower 1
expect "linearizable get via another member" "via-follower
1" etcdctl --endpoints="$C3" get via-follower
expect "serializable get" "via-follower
1" etcdctl --endpoints="$C1" get via-follower --consistency=s
expect_error "compacted revision" "required revision has been compacted" etcdctl --endpoints="$C1" get foo --rev=1
expect_error "empty key" "key is not provided" etcdctl --endpoints="$C1" put "" x
head -c 2000000 /dev/zero | tr '\0' x >"$WORK/big"
put_big() { etcdctl --endpoints="$C1" put big <"$WORK/big"; }
expect_error "request too large (a 2 MB value)" "request is too large" put_big

# keel's own client prints a watch as etcdctl does (both stop at the timeout).
keel_watch=$(timeout 2 "$KEEL_BIN" watch --endpoints "$C1" --prefix a/ --rev=4 --prev-kv || true)
etcdctl_watch=$(timeout 2 etcdctl --endpoints="$C1" watch --prefix a/ --rev=4 --prev-kv || true)
[[ -n "$keel_watch" && "$keel_watch" == "$etcdctl_watch" ]] ||
    fail "keel watch printed
$keel_watch
where etcdctl watch printed
$etcdctl_watch"
echo "ok   keel watch prints what etcdctl watch does"

# keel's own lease, lock and elect commands print what etcdctl's do.
lease_id=$("$KEEL_BIN" lease grant --endpoints "$C1" 60 | awk '{print $2}')
etcdctl --endpoints="$C1" put --lease="$lease_id" cli-leased v >/dev/null
unify() { sed -E 's/remaining\([0-9]+s\)/remaining(R)/'; }
keel_ttl=$("$KEEL_BIN" lease timetolive --endpoints "$C1" --keys "$lease_id" | unify)
etcdctl_ttl=$(etcdctl --endpoints="$C1" lease timetolive --keys "$lease_id" | unify)
[[ -n "$keel_ttl" && "$keel_ttl" == "$etcdctl_ttl" ]] ||
    fail "keel lease timetolive printed '$keel_ttl' where etcdctl printed '$etcdctl_ttl'"
keel_alive=$("$KEEL_BIN" lease keep-alive --endpoints "$C1" --once "$lease_id")
etcdctl_alive=$(etcdctl --endpoints="$C1" lease keep-alive --once "$lease_id")
[[ "$keel_alive" == "$etcdctl_alive" ]] ||
    fail "keel lease keep-alive printed '$keel_alive' where etcdctl printed '$etcdctl_alive'"
"$KEEL_BIN" lease revoke --endpoints "$C1" "$lease_id" | grep -q "revoked" || fail "keel lease revoke"
[[ -z $(etcdctl --endpoints="$C1" get cli-leased) ]] || fail "revoking with keel left the key"
got=$("$KEEL_BIN" lock --endpoints "$C1" cli-lock -- echo locked) || fail "keel lock: $got"
[[ "$got" == locked ]] || fail "keel lock ran the command and printed '$got'"
echo "ok   keel lease grant, timetolive, keep-alive, revoke and lock"

# A lock holder killed with SIGKILL: its lease (2 s) runs out and the
# waiter gets the lock.
etcdctl --endpoints="$C1" lock --ttl=2 held -- sleep 30 >/dev/null 2>&1 &
holder=$!
sleep 0.5
kill -9 "$holder"
started=$(date +%s%N)
got=$(timeout 10 etcdctl --endpoints="$C2" lock held -- echo acquired 2>&1) ||
    fail "the waiter never got the lock of a killed holder: $got"
waited=$((($(date +%s%N) - started) / 1000000))
[[ "$got" == acquired ]] || fail "lock after a killed holder printed $got"
((waited >= 1000)) || fail "the lock of a killed holder passed on after only ${waited} ms (its lease was 2 s)"
echo "ok   a killed lock holder's lease ran out and the waiter got the lock (${waited} ms)"

members=$(etcdctl --endpoints="$C1" member list)
[[ $(grep -c ", started, k[123], http://127.0.0.1:" <<<"$members") == 3 ]] || fail "member list: $members"
echo "ok   member list shows k1, k2, k3 started"

status=$(etcdctl --endpoints="$ALL" endpoint status)
[[ $(wc -l <<<"$status") == 3 ]] || fail "endpoint status: $status"
[[ $(grep -c ", true, false, " <<<"$status") == 1 ]] || fail "endpoint status should show one leader: $status"
echo "ok   endpoint status: three members, one leader"

health=$(etcdctl --endpoints="$ALL" endpoint health 2>&1)
[[ $(grep -c "is healthy" <<<"$health") == 3 ]] || fail "endpoint health: $health"
echo "ok   endpoint health: three healthy"

# Endpoints written with a scheme: for these calls the Go client sends the
# HTTP/2 :authority as "http://host:port", which etcd ignores.
WITH_SCHEME="http://$C1,http://$C2,http://$C3"
status=$(etcdctl --endpoints="$WITH_SCHEME" endpoint status 2>&1) || fail "endpoint status with http:// endpoints: $status"
[[ $(wc -l <<<"$status") == 3 ]] || fail "endpoint status with http:// endpoints: $status"
hashes=$(etcdctl --endpoints="$WITH_SCHEME" endpoint hashkv 2>&1) || fail "endpoint hashkv with http:// endpoints: $hashes"
defrag=$(etcdctl --endpoints="$WITH_SCHEME" defrag 2>&1) || fail "defrag with http:// endpoints: $defrag"
[[ $(grep -c "^Finished defragmenting" <<<"$defrag") == 3 ]] || fail "defrag with http:// endpoints: $defrag"
echo "ok   endpoint status, hashkv and defrag with http:// endpoints"

hashes=$(etcdctl --endpoints="$ALL" endpoint hashkv | awk '{print $2}' | sort -u)
[[ $(wc -l <<<"$hashes") == 1 ]] || fail "hashkv differs between members: $hashes"
echo "ok   hashkv identical on every member"

etcdctl --endpoints="$C1" snapshot save "$WORK/backup.db" >/dev/null 2>&1 || fail "snapshot save failed"
[[ -s "$WORK/backup.db" ]] || fail "snapshot save wrote nothing"
echo "ok   snapshot save ($(stat -c %s "$WORK/backup.db") bytes)"

# keel snapshot status checks the backup end to end; its hash is the
# members' hashkv at the backup's revision (nothing was written since).
status=$("$KEEL_BIN" snapshot status -w json "$WORK/backup.db") || fail "keel snapshot status: $status"
[[ $(grep -oE '"hash":[0-9]+' <<<"$status" | cut -d: -f2) == "$hashes" ]] ||
    fail "snapshot status hash differs from hashkv $hashes: $status"
cp "$WORK/backup.db" "$WORK/corrupt.db"
printf 'X' | dd of="$WORK/corrupt.db" bs=1 seek=100 conv=notrunc 2>/dev/null
corrupt=$("$KEEL_BIN" snapshot status "$WORK/corrupt.db" 2>&1) && fail "a corrupt backup passed: $corrupt"
grep -q "integrity check failed" <<<"$corrupt" || fail "corrupt backup: unclear error: $corrupt"
echo "ok   keel snapshot status: the backup's hash is the members' hashkv; a corrupt one is refused"

echo "== membership: add a fourth member, let it join, remove it"
C4=127.0.0.1:$((BASE + 300)) P4=127.0.0.1:$((BASE + 301))
added=$(etcdctl --endpoints="$C1" member add k4 --peer-urls="http://$P4") || fail "member add: $added"
new_id=$(grep -oE "Member +[0-9a-f]+ added" <<<"$added" | awk '{print $2}' || true)
[[ -n "$new_id" ]] || fail "member add printed no id: $added"
start_member k4 "$C4" "$P4" "$INITIAL,k4=http://$P4" existing
for _ in $(seq 1 100); do
    if etcdctl --endpoints="$C1" member list | grep -q "^$new_id, started, k4, http://$P4, http://$C4, false"; then break; fi
    sleep 0.2
done
etcdctl --endpoints="$C1" member list | grep -q "^$new_id, started, k4, http://$P4, http://$C4, false" ||
    fail "k4 did not join as a voter: $(etcdctl --endpoints="$C1" member list)"
expect "the new member serves reads" "via-follower
1" etcdctl --endpoints="$C4" get via-follower
# etcdctl prints both ids as %16x: a shorter id is padded with spaces.
cluster_hex=$(etcdctl --endpoints="$C1" member list -w json | grep -oE '"cluster_id":[0-9]+' | head -1 | cut -d: -f2 | xargs printf '%x')
expect "member remove" "$(printf 'Member %16s removed from cluster %16s' "$new_id" "$cluster_hex")" etcdctl --endpoints="$C1" member remove "$new_id"
[[ $(etcdctl --endpoints="$C1" member list | wc -l) == 3 ]] || fail "member list after remove"
echo "ok   member list back to three"

echo "== restore: etcdctl's backup becomes a new one-member cluster with the same hash"
C5=127.0.0.1:$((BASE + 400)) P5=127.0.0.1:$((BASE + 401))
backup_rev=$(grep -oE '"revision":[0-9]+' <<<"$status" | cut -d: -f2)
"$KEEL_BIN" snapshot restore "$WORK/backup.db" --data-dir "$WORK/r1" --name r1 \
    --initial-cluster "r1=http://$P5" --initial-cluster-token compat \
    --initial-advertise-peer-urls "http://$P5" >/dev/null || fail "keel snapshot restore failed"
"$KEEL_BIN" snapshot restore "$WORK/backup.db" --data-dir "$WORK/r1" --name r1 \
    --initial-cluster "r1=http://$P5" --initial-advertise-peer-urls "http://$P5" >/dev/null 2>&1 &&
    fail "restore into an existing data dir was not refused"
start_member r1 "$C5" "$P5" "r1=http://$P5" new
wait_healthy "$C5"
restored=$(etcdctl --endpoints="$C5" endpoint hashkv --rev="$backup_rev" | awk '{print $2}')
[[ "$restored" == "$hashes" ]] || fail "restored hashkv $restored at $backup_rev, backup's $hashes"
[[ $(etcdctl --endpoints="$C5" member list | wc -l) == 1 ]] || fail "restored member list: $(etcdctl --endpoints="$C5" member list)"
expect "the restored member serves the backup's keys" "via-follower
1" etcdctl --endpoints="$C5" get via-follower
echo "ok   keel snapshot restore: same hashkv at the backup's revision, one member, the keys served"

# etcdctl's auth flow: root, enable (etcdctl adds the root role and grants
# it), a role with a prefix, a user who may read and not write, a watch
# outside the user's range refused, disable. The same commands against etcd
# give the same transcript.
auth_session() {
    set +e
    local e="--endpoints=$1" r="--user=root:rootpw" a="--user=alice:alicepw"
    etcdctl "$e" user add root:rootpw
    etcdctl "$e" auth enable
    etcdctl "$e" auth enable
    etcdctl "$e" put auth/a/1 x
    etcdctl "$e" "$r" role add reader
    etcdctl "$e" "$r" role grant-permission reader read auth/a/ --prefix=true
    etcdctl "$e" "$r" role grant-permission reader write auth/z
    etcdctl "$e" "$r" role get reader
    etcdctl "$e" "$r" role revoke-permission reader auth/z
    etcdctl "$e" "$r" user add alice:alicepw
    etcdctl "$e" "$r" user grant-role alice reader
    etcdctl "$e" "$r" user get alice
    etcdctl "$e" "$r" user list
    etcdctl "$e" "$r" role list
    etcdctl "$e" "$r" put auth/a/1 x
    etcdctl "$e" "$a" get auth/a/1
    etcdctl "$e" "$a" get auth/a/ --prefix
    etcdctl "$e" "$a" put auth/a/2 y
    etcdctl "$e" "$a" get auth/b
    etcdctl "$e" --user=alice:wrong get auth/a/1
    etcdctl "$e" --user=nobody:pw get auth/a/1
    timeout 5 etcdctl "$e" "$a" watch auth/b --prefix
    etcdctl "$e" "$a" user list
    etcdctl "$e" "$r" user delete root
    etcdctl "$e" "$r" role delete root
    etcdctl "$e" "$r" auth disable
    etcdctl "$e" put auth/a/3 z
    etcdctl "$e" user delete alice
    set -e
}

# One endpoint, as against etcd: etcdctl retries a failed login on each
# endpoint it is given, one warning each.
echo "== auth: etcdctl's flow against keel (one member of three)"
# etcdctl's retry warnings carry times and client ids.
unstamp() { sed -E 's/"ts":"[^"]*"/"ts":T/; s/"target":"[^"]*"/"target":E/'; }
auth_session "$C2" 2>&1 | unstamp >"$WORK/keel-auth.transcript"
if [[ -n "${ETCD_AUTH_ENDPOINT:-}" ]]; then
    auth_session "$ETCD_AUTH_ENDPOINT" 2>&1 | unstamp >"$WORK/etcd-auth.transcript"
    if ! diff -u "$WORK/etcd-auth.transcript" "$WORK/keel-auth.transcript"; then
        fail "keel's auth transcript differs from etcd's (above: - etcd, + keel)"
    fi
    echo "ok   auth transcript identical to etcd's ($(wc -l <"$WORK/keel-auth.transcript") lines)"
else
    grep -q "permission denied" "$WORK/keel-auth.transcript" ||
        fail "no permission denied in the auth session: $(cat "$WORK/keel-auth.transcript")"
fi

echo "compat: all checks passed"
