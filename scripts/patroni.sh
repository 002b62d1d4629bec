#!/usr/bin/env bash
# Patroni (Debian's patroni 3.0.2) managing two PostgreSQL 15 nodes with a
# fresh three-member keel cluster (`keel cluster`) as its DCS, through
# etcd's JSON gateway (Patroni's etcd3 driver): the first node bootstraps as
# primary and the second follows; then the primary (Patroni and Postgres) is
# killed with SIGKILL and, while it fails over, so is the keel leader. The
# replica must be promoted and take writes, and `patronictl list` must show
# it. Auth is on: Patroni logs in as a user that may read and write only
# its namespace (/service/), through the gateway's /v3/auth/authenticate
# and Authorization header. Installs patroni, postgresql and etcd-client if
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/keel_cluster.sh
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if ! command -v patroni >/dev/null || ! command -v etcdctl >/dev/null || [[ -z "$pg_bin" ]]; then
    echo "== installing patroni, postgresql and etcd-client"
    { apt-get update -qq && apt-get install -y -qq patroni postgresql etcd-client; } >/dev/null 2>&1 ||
        { echo "patroni: cannot install patroni, postgresql and etcd-client" >&2; exit 1; }
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
work=$(mktemp -d /tmp/keel-patroni.XXXXXX)
chmod 755 "$work"
cleanup() {
    pkill -9 -f "patroni $work/" 2>/dev/null || true
    pkill -9 -f "postgres -D $work/" 2>/dev/null || true
    keel_cluster_stop
    rm -rf "$work"
}
trap cleanup EXIT
keel_cluster_start "$work/keel"
endpoints=$KEEL_ENDPOINTS
keel=$KEEL
fail() {
    echo "patroni: FAIL: $*" >&2
    for log in "$work"/pg1.log "$work"/pg2.log; do
        echo "--- $log (last 30 lines)" >&2
        tail -n 30 "$log" >&2 || true
    done
    keel_cluster_log
    exit 1
}

# Auth on: root, and a user for Patroni's namespace only.
export ETCDCTL_API=3
ctl() { etcdctl --endpoints="$endpoints" "$@" >/dev/null || fail "etcdctl $*"; }
ctl user add root:root-pw
ctl user add patroni:patroni-pw
ctl auth enable
ctl --user root:root-pw role add patroni
ctl --user root:root-pw role grant-permission patroni readwrite /service/ --prefix=true
ctl --user root:root-pw user grant-role patroni patroni
echo "ok   auth on; Patroni logs in as a user of /service/ only"

for i in 1 2; do
    cat >"$work/pg$i.yml" <<CONF
scope: keel-demo
name: pg$i
restapi:
  listen: 127.0.0.1:$((8008 + i))
  connect_address: 127.0.0.1:$((8008 + i))
etcd3:
  hosts: $endpoints
  username: patroni
  password: patroni-pw
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
  initdb:
  - encoding: UTF8
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$((5432 + i))
  connect_address: 127.0.0.1:$((5432 + i))
  data_dir: $work/pg$i
  bin_dir: $pg_bin
  pgpass: $work/pgpass$i
  authentication:
    replication: {username: replicator, password: rep}
    superuser: {username: postgres, password: pw}
  parameters:
    unix_socket_directories: $work
CONF
done
chown -R postgres "$work"

start_patroni() { # i
    su postgres -s /bin/sh -c "patroni $work/pg$1.yml >$work/pg$1.log 2>&1 &"
}
list() { patronictl -c "$work/pg1.yml" list 2>/dev/null || true; }
# wait_for PATTERN SECONDS: until `patronictl list` shows a line matching it.
wait_for() {
    for _ in $(seq 1 $(($2 * 2))); do
        list | grep -Eq "$1" && return 0
        sleep 0.5
    done
    fail "no line matching '$1' in patronictl list after $2 s: $(list)"
}

start_patroni 1
wait_for '\| pg1 .*\| Leader .*\| running' 60
start_patroni 2
wait_for '\| pg2 .*\| Replica .*\| (running|streaming)' 90
echo "ok   pg1 bootstrapped as primary through keel; pg2 follows it"
list

# Kill the primary, Patroni and Postgres alike, and then the keel leader.
pkill -9 -f "patroni $work/pg1.yml"
pkill -9 -f "postgres -D $work/pg1"
leader_id=$("$keel" status --endpoints "$endpoints" 2>/dev/null | grep -oE "leader [0-9a-f]+" | head -1 | awk '{print $2}')
leader_endpoint=$("$keel" status --endpoints "$endpoints" 2>/dev/null | awk -F', ' -v id="$leader_id" '$2 == id {print $1}')
[[ -n "$leader_endpoint" ]] || fail "no keel leader found"
sleep 2
pkill -9 -f "keel serve .*--listen-client-urls http://$leader_endpoint" || fail "killing the keel leader at $leader_endpoint"
echo "ok   killed the primary (pg1) and the keel leader ($leader_endpoint)"

wait_for '\| pg2 .*\| Leader .*\| running' 90
"$pg_bin/psql" -h 127.0.0.1 -p 5434 -U postgres -v ON_ERROR_STOP=1 -qc \
    "create table after_failover (id int); insert into after_failover values (1);" postgres ||
    fail "the promoted replica does not take writes"
echo "ok   pg2 promoted and takes writes; patronictl list:"
list
echo "patroni: all checks passed"
