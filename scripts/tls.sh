#!/usr/bin/env bash
# TLS with etcdctl: makes a CA and certificates with openssl, starts a fresh
# three-member keel cluster with client and peer TLS and client certificate
# auth on both ports, and checks that etcdctl (Debian's etcd-client, installed
# if missing) works with --cacert/--cert/--key, over https:// endpoints too,
# while clients without a certificate, with another CA's or in plaintext are
# refused.
#
#   bash scripts/tls.sh                  # builds keel in release mode first
#   KEEL_BIN=path/to/keel bash scripts/tls.sh
#   KEEP_TLS=1 bash scripts/tls.sh       # keeps the certificates and logs
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v openssl >/dev/null || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    { apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"; } >/dev/null 2>&1 ||
        { echo "tls: cannot install ${need_apt[*]}" >&2; exit 1; }
fi
export ETCDCTL_API=3

SCRIPT=tls KEEP_VAR=KEEP_TLS
source scripts/lib/processes.sh
keel_bin

# count NAME WANT PATTERN CMD...: CMD must print WANT lines matching PATTERN.
count() {
    local name=$1 want=$2 pattern=$3
    shift 3
    local got
    got=$("$@" 2>&1) || fail "$name: \`$*\` failed: $got"
    [[ $(grep -c -- "$pattern" <<<"$got") == "$want" ]] ||
        fail "$name: \`$*\` printed
$got
but should print $want lines with $pattern"
    echo "ok   $name"
}

# refused NAME CMD...: CMD must fail.
refused() {
    local name=$1
    shift
    if out=$("$@" 2>&1); then
        fail "$name: \`$*\` should have been refused but printed: $out"
    fi
    echo "ok   $name (refused)"
}

echo "== certificates in $WORK"
cd "$WORK"
ca() { # ca NAME: a self-signed CA, NAME.pem and NAME-key.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1-key.pem" -out "$1.pem" -days 2 -subj "/CN=$1" 2>/dev/null
}
issue() { # issue CA NAME: NAME.pem (CN NAME, for 127.0.0.1) signed by CA
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$2-key.pem" -out "$2.csr" -subj "/CN=$2" 2>/dev/null
    openssl x509 -req -in "$2.csr" -CA "$1.pem" -CAkey "$1-key.pem" -CAcreateserial \
        -out "$2.pem" -days 2 -extfile <(printf '%s\n' \
            "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "extendedKeyUsage=serverAuth,clientAuth" \
            "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature") 2>/dev/null
}
ca ca
ca rogue-ca
issue ca member
issue ca root
issue rogue-ca mallory
cd - >/dev/null

CLIENT_PORTS=(24791 24792 24793)
PEER_PORTS=(24801 24802 24803)
INITIAL=""
for i in 0 1 2; do
    INITIAL+="${INITIAL:+,}t$i=https://127.0.0.1:${PEER_PORTS[$i]}"
done
tls_flags=()
for prefix in "" peer-; do
    tls_flags+=(--"${prefix}"cert-file "$WORK/member.pem" --"${prefix}"key-file "$WORK/member-key.pem"
        --"${prefix}"trusted-ca-file "$WORK/ca.pem" --"${prefix}"client-cert-auth)
done

echo "== starting three keel members with client and peer TLS"
for i in 0 1 2; do
    "$KEEL_BIN" serve --name "t$i" --data-dir "$WORK/t$i" \
        --listen-client-urls "https://127.0.0.1:${CLIENT_PORTS[$i]}" \
        --listen-peer-url "https://127.0.0.1:${PEER_PORTS[$i]}" \
        --initial-cluster "$INITIAL" --initial-cluster-token tls-check \
        --log-format text "${tls_flags[@]}" 2>"$WORK/t$i.log" &
    PIDS+=($!)
done

ENDPOINTS=127.0.0.1:24791,127.0.0.1:24792,127.0.0.1:24793
certified=(--cacert "$WORK/ca.pem" --cert "$WORK/root.pem" --key "$WORK/root-key.pem")
ctl() { etcdctl --endpoints "$ENDPOINTS" "${certified[@]}" "$@"; }
for _ in $(seq 1 100); do
    ctl endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done
ctl endpoint health >/dev/null 2>&1 || fail "the cluster is not healthy after 20 s"

echo "== etcdctl with --cacert/--cert/--key"
expect "put" "OK" ctl put greeting hello
expect "get" $'greeting\nhello' ctl get greeting
expect "get through https:// endpoints" $'greeting\nhello' \
    etcdctl --endpoints "https://127.0.0.1:24792,https://127.0.0.1:24793" "${certified[@]}" get greeting
expect "txn" $'SUCCESS\n\nOK' ctl txn <<<$'value("greeting") = "hello"\n\nput greeting hi\n\n'
HTTPS_ENDPOINTS=https://127.0.0.1:24791,https://127.0.0.1:24792,https://127.0.0.1:24793
count "member list" 3 "https://127.0.0.1:248" ctl member list
count "endpoint health" 3 "is healthy" etcdctl --endpoints "$HTTPS_ENDPOINTS" "${certified[@]}" endpoint health
count "endpoint status" 3 "3.5.13" etcdctl --endpoints "$HTTPS_ENDPOINTS" "${certified[@]}" endpoint status

echo "== refused"
refused "no client certificate" etcdctl --endpoints 127.0.0.1:24791 --cacert "$WORK/ca.pem" \
    --dial-timeout 2s --command-timeout 3s get greeting
refused "another CA's certificate" etcdctl --endpoints 127.0.0.1:24791 --cacert "$WORK/ca.pem" \
    --cert "$WORK/mallory.pem" --key "$WORK/mallory-key.pem" --dial-timeout 2s --command-timeout 3s get greeting
refused "plaintext" etcdctl --endpoints http://127.0.0.1:24791 --dial-timeout 2s --command-timeout 3s get greeting
expect "still serving" $'greeting\nhi' ctl get greeting

echo "tls: all checks passed"
