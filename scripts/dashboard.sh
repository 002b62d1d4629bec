#!/usr/bin/env bash
# The web dashboard (GET / on every member's client port) in a headless
# Chromium against a fresh three-member keel cluster (`keel cluster`):
# keys are written with etcdctl, among them keys and values made of HTML
# markup, and the pages the browser renders must show
#   - #/cluster: the real leader (as etcdctl sees it) in #leader-name and on
#     the one row with data-role="leader" (the page is loaded from a
#     follower, so a follower's view of the leader is what is checked);
#   - #/keys: the folder app/, and under prefix app/config/ the key
#     app/config/a as a .key-entry;
#   - #/leases: a lease granted with etcdctl, with its key;
#   - #/watch from revision 1: the history's events, markup keys included;
#   - #/metrics: rendered, with its proposals chart;
#   - the markup keys and values as text only: escaped in the DOM, no
#     element injected (no <img>, no extra <script>, no on* attribute) and no
#     body[data-pwned];
#   - with auth on and no token: the login form (#login), no cluster data.
# A screenshot of #/cluster is left in a temporary directory (its path is
# printed; DASHBOARD_SHOT_DIR chooses it). Installs Debian's chromium and
# etcd-client if missing.
#
#   bash scripts/dashboard.sh
#   KEEP_DASHBOARD=1 bash scripts/dashboard.sh   # keeps the dumped pages (kept anyway on failure)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/keel_cluster.sh

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    { apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"; } >/dev/null 2>&1 ||
        { echo "dashboard: cannot install ${need_apt[*]}" >&2; exit 1; }
fi
export ETCDCTL_API=3
python=/usr/bin/python3

work=$(mktemp -d /tmp/keel-dashboard.XXXXXX)
shots=${DASHBOARD_SHOT_DIR:-$(mktemp -d /tmp/keel-dashboard-shot.XXXXXX)}
mkdir -p "$shots"
cleanup() {
    local rc=$?
    keel_cluster_stop
    if [[ -n "${KEEP_DASHBOARD:-}" || $rc -ne 0 ]]; then
        echo "dashboard: the dumped pages and chromium's logs are kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

fail() {
    echo "dashboard: FAIL: $*" >&2
    keel_cluster_log
    exit 1
}

keel_cluster_start "$work/keel"
endpoints=$KEEL_ENDPOINTS
ctl() { etcdctl --endpoints="$endpoints" --command-timeout=10s "$@"; }

# ---- the keys the pages must show
xss_script='<script>alert(1)</script>'
xss_img='<img src=x onerror="document.body.dataset.pwned=1">'
ctl put app/config/a hello >/dev/null || fail "etcdctl put app/config/a"
ctl put app/config/b '{"replicas": 3}' >/dev/null || fail "etcdctl put app/config/b"
ctl put app/readme 'see app/config/' >/dev/null || fail "etcdctl put app/readme"
ctl put "$xss_script" '<script>alert(2)</script><b>bold</b>' >/dev/null || fail "etcdctl put $xss_script"
ctl put "$xss_img" '<img src=x onerror="document.body.dataset.pwned=2">' >/dev/null || fail "etcdctl put $xss_img"
[[ "$(ctl get app/config/a --print-value-only)" == hello ]] || fail "etcdctl get app/config/a does not read back hello"
lease_hex=$(ctl lease grant 600 | awk '/granted/ {print $2}')
[[ -n "$lease_hex" ]] || fail "etcdctl lease grant 600"
ctl put --lease="$lease_hex" app/leased 'held by a lease' >/dev/null || fail "etcdctl put --lease"
echo "ok   wrote app/config/{a,b}, app/readme and two keys of HTML markup with etcdctl"

# ---- the checks on a dumped DOM (Python's html.parser; no dependencies)
cat >"$work/check.py" <<'PY'
"""check.py FILE CHECK ARGS...: checks on a DOM dumped by chromium --dump-dom.
Exits 1 with a message saying what is wrong."""
import html.parser
import sys

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def walk(self):
        yield self
        for c in self.children:
            if not isinstance(c, str):
                yield from c.walk()


class Tree(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", [], None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


path, check, args = sys.argv[1], sys.argv[2], sys.argv[3:]
raw = open(path, encoding="utf-8", errors="replace").read()
tree = Tree()
tree.feed(raw)
nodes = list(tree.root.walk())
body = next((n for n in nodes if n.tag == "body"), None)
if body is None:
    die("no <body> in the dumped page")


def by_class(c):
    return [n for n in nodes if c in n.classes()]


def page_state():
    """What the page says about itself, for failure messages."""
    errors = [" ".join(n.text().split()) for n in by_class("banner-error") if "hidden" not in n.attrs]
    return "body data-page=%r data-ready=%r%s" % (
        body.attrs.get("data-page"), body.attrs.get("data-ready"),
        "; the page shows: " + " | ".join(errors) if errors else "")


if check == "ready":
    if body.attrs.get("data-ready") != "1":
        die("the page did not finish rendering the server's data (" + page_state() + ")")

elif check == "leader":  # NAME HEXID MEMBER_NAMES...
    name, hexid, names = args[0], args[1], args[2:]
    el = next((n for n in nodes if n.attrs.get("id") == "leader-name"), None)
    if el is None:
        die("no #leader-name element (" + page_state() + ")")
    if el.text().strip() != name:
        die("#leader-name shows %r, but the leader is %r (%s)" % (el.text().strip(), name, page_state()))
    rows = [n for n in nodes if n.tag == "tr" and "data-member-name" in n.attrs]
    seen = sorted(r.attrs["data-member-name"] for r in rows)
    for n in names:
        if n not in seen:
            die("no cluster row with data-member-name=%r (rows: %r)" % (n, seen))
    leaders = [r for r in rows if r.attrs.get("data-role") == "leader"]
    if len(leaders) != 1:
        die("%d rows have data-role=\"leader\" (rows: %r)" % (
            len(leaders), [(r.attrs["data-member-name"], r.attrs.get("data-role")) for r in rows]))
    if leaders[0].attrs["data-member-name"] != name:
        die("the data-role=\"leader\" row is %r, but the leader is %r" % (leaders[0].attrs["data-member-name"], name))
    if leaders[0].attrs.get("data-member-id", hexid) != hexid:
        die("the leader row's data-member-id is %r, not %r" % (leaders[0].attrs.get("data-member-id"), hexid))

elif check in ("keys", "folders"):  # TEXT...: .key-entry / .folder-entry elements with these texts
    cls = "key-entry" if check == "keys" else "folder-entry"
    have = [n.text() for n in by_class(cls)]
    for want in args:
        if want not in have:
            die("no .%s showing %r; the page lists %r (%s)" % (cls, want, have[:50], page_state()))

elif check == "lease":  # HEXID KEY...: a leases row for the lease, with these keys as chips
    row = next((n for n in nodes if n.tag == "tr" and n.attrs.get("data-lease-id", "").lower() == args[0].lower()), None)
    if row is None:
        ids = [n.attrs["data-lease-id"] for n in nodes if "data-lease-id" in n.attrs]
        die("no row with data-lease-id=%r; rows: %r (%s)" % (args[0], ids, page_state()))
    chips = [c.text() for c in row.walk() if "chip" in c.classes()]
    for want in args[1:]:
        if want not in chips:
            die("the lease's row lists keys %r, not %r" % (chips, want))

elif check == "events":  # KEY...: watch events (.event-key) for these keys
    have = [n.text() for n in by_class("event-key")]
    for want in args:
        if want not in have:
            die("no watch event for %r; the events are for %r (%s)" % (want, have[:50], page_state()))

elif check == "value":  # TEXT: the value viewer shows it as text
    pres = [n for n in nodes if n.tag == "pre" and "value" in n.classes()]
    if not pres or pres[0].text() != args[0]:
        die("the value viewer shows %r, not %r (%s)" % (pres[0].text() if pres else None, args[0], page_state()))

elif check == "escaped":  # RAW...: these strings occur in the serialized DOM as they are
    for want in args:
        if want not in raw:
            die("the dumped DOM does not contain %r: the markup is not shown as escaped text (%s)" % (want, page_state()))

elif check == "safe":  # nothing from the server turned into elements or ran
    if any("data-pwned" in n.attrs for n in nodes):
        die("an element has data-pwned: injected markup ran")
    scripts = [n for n in nodes if n.tag == "script"]
    bad = [n for n in scripts if n.attrs.get("src") != "/assets/app.js" or n.text().strip()]
    if bad or len(scripts) != 1:
        die("<script> elements other than /assets/app.js: %r" % [(s.attrs, s.text()[:80]) for s in scripts])
    imgs = [n.attrs for n in nodes if n.tag in ("img", "iframe", "object", "embed")]
    if imgs:
        die("injected elements: %r" % imgs)
    handlers = [(n.tag, a) for n in nodes for a in n.attrs if a.lower().startswith("on")]
    if handlers:
        die("elements with event-handler attributes: %r" % handlers)
    if any(n.tag == "b" for n in nodes):
        die("a <b> element: a value's markup was parsed as HTML")

else:
    die("unknown check " + check)
PY
check() { # FILE CHECK ARGS...
    local file=$1
    shift
    "$python" "$work/check.py" "$work/$file.html" "$@" || fail "$file: the $1 check failed (the page: $work/$file.html)"
}

# ---- headless Chromium
chrome_flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --disable-dev-shm-usage --hide-scrollbars --virtual-time-budget=8000)
# chrome NAME ARGS... : runs chromium with a fresh profile; its stderr in NAME.chrome.log.
chrome() {
    local name=$1
    shift
    local profile
    profile=$(mktemp -d "$work/profile.XXXXXX")
    timeout 120 chromium "${chrome_flags[@]}" --user-data-dir="$profile" "$@" 2>"$work/$name.chrome.log"
}
# dump NAME URL: the page's DOM once it has run, in NAME.html.
dump() {
    if ! chrome "$1" --dump-dom "$2" >"$work/$1.html"; then
        tail -n 20 "$work/$1.chrome.log" >&2 || true
        fail "chromium could not load $2"
    fi
    [[ -s "$work/$1.html" ]] || fail "chromium dumped nothing for $2"
}

# ---- the leader as etcdctl sees it: "NAME HEXID FOLLOWER-CLIENT-URL"
leader_info() {
    local status members
    status=$(ctl endpoint status --cluster -w json) || return 1
    members=$(ctl member list -w json) || return 1
    "$python" - "$status" "$members" <<'PY'
import collections, json, sys
status, members = json.loads(sys.argv[1]), json.loads(sys.argv[2])["members"]
votes = collections.Counter(s["Status"]["leader"] for s in status if s["Status"].get("leader"))
if not votes:
    sys.exit("no member knows a leader")
leader = votes.most_common(1)[0][0]
by_id = {m["ID"]: m for m in members}
if leader not in by_id:
    sys.exit("the leader %x is not in the member list" % leader)
followers = [m for m in members if m["ID"] != leader and m.get("clientURLs")]
url = (followers or [by_id[leader]])[0]["clientURLs"][0]
print(by_id[leader]["name"], "%x" % leader, url.rstrip("/"))
PY
}

info=$(leader_info) || fail "etcdctl endpoint status / member list: no leader"
read -r leader leader_hex base <<<"$info"
member_names=$(ctl member list -w json | "$python" -c 'import json,sys; print(" ".join(sorted(m["name"] for m in json.load(sys.stdin)["members"])))')
echo "ok   etcdctl: leader $leader ($leader_hex); the dashboard is loaded from the follower at $base"

# The binary serves the dashboard at all?
"$python" - "$base" <<'PY' || fail "$base/ does not serve the dashboard"
import sys, urllib.request
base = sys.argv[1]
for path, want in (("/", "/assets/app.js"), ("/assets/app.js", "key-entry"), ("/assets/style.css", "{")):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        body = r.read().decode("utf-8", "replace")
        if r.status != 200 or want not in body:
            sys.exit("GET %s: status %d, no %r in the body" % (path, r.status, want))
PY
echo "ok   $base/ serves index.html, /assets/app.js and /assets/style.css"

# ---- #/cluster: the leader (again, should it move while the page loads)
for _ in 1 2 3; do
    dump cluster "$base/#/cluster"
    read -r leader_after _ _ <<<"$(leader_info || true)"
    [[ "$leader_after" == "$leader" ]] && break
    echo "   the leader moved ($leader -> ${leader_after:-none}) while the page loaded; again"
    info=$(leader_info) || fail "no leader"
    read -r leader leader_hex base <<<"$info"
done
check cluster ready
check cluster safe
# shellcheck disable=SC2086
check cluster leader "$leader" "$leader_hex" $member_names
echo "ok   #/cluster: #leader-name and the data-role=leader row show $leader, rows for $member_names"

# ---- #/keys
dump keys-root "$base/#/keys?prefix="
check keys-root ready
check keys-root safe
check keys-root folders "app/"
check keys-root keys "$xss_img"
check keys-root escaped '&lt;img src=x onerror="document.body.dataset.pwned=1"&gt;'
echo "ok   #/keys?prefix=: folder app/ and the <img ...> key as text"

dump keys-app "$base/#/keys?prefix=app%2Fconfig%2F"
check keys-app ready
check keys-app safe
check keys-app keys app/config/a app/config/b
echo "ok   #/keys?prefix=app%2Fconfig%2F: app/config/a and app/config/b"

dump keys-flat "$base/#/keys?prefix=&flat=1"
check keys-flat ready
check keys-flat safe
check keys-flat keys "$xss_script" "$xss_img" app/config/a
check keys-flat escaped '&lt;script&gt;alert(1)&lt;/script&gt;'
echo "ok   #/keys?prefix=&flat=1: both markup keys listed as escaped text"

dump key-script "$base/#/keys?prefix=&key=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
check key-script ready
check key-script safe
check key-script value '<script>alert(2)</script><b>bold</b>'
check key-script escaped '&lt;script&gt;alert(2)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;'
dump key-img "$base/#/keys?prefix=&key=%3Cimg%20src%3Dx%20onerror%3D%22document.body.dataset.pwned%3D1%22%3E"
check key-img ready
check key-img safe
check key-img value '<img src=x onerror="document.body.dataset.pwned=2">'
echo "ok   the markup keys' values are shown as text in the key view"

# ---- #/leases, #/watch (replaying from revision 1), #/metrics
dump leases "$base/#/leases"
check leases ready
check leases safe
check leases lease "$lease_hex" app/leased
echo "ok   #/leases: lease $lease_hex with its key app/leased"
dump watch "$base/#/watch?prefix=&start=1&rev=1"
check watch ready
check watch safe
check watch events app/config/a app/leased "$xss_script" "$xss_img"
check watch escaped '&lt;script&gt;alert(1)&lt;/script&gt;'
echo "ok   #/watch from revision 1: the history's events, the markup keys as text"
dump metrics "$base/#/metrics"
check metrics ready
check metrics safe
grep -q 'Proposals committed' "$work/metrics.html" || fail "#/metrics shows no proposals chart (the page: $work/metrics.html)"
echo "ok   #/metrics: rendered with its charts"

# ---- a screenshot of #/cluster
shot="$shots/cluster.png"
chrome screenshot --window-size=1366,900 --screenshot="$shot" "$base/#/cluster" >/dev/null ||
    fail "chromium could not take the screenshot"
[[ -s "$shot" ]] || fail "the screenshot $shot is missing or empty"
echo "ok   screenshot of #/cluster: $shot"
# ---- with auth on, the pages ask root to log in
ctl user add root:rootpw >/dev/null
ctl auth enable >/dev/null
dump login "$base/#/cluster"
grep -q 'id="login"' "$work/login.html" || fail "with auth on, #/cluster shows no login form (the page: $work/login.html)"
grep -q 'data-role="leader"' "$work/login.html" && fail "with auth on and no token, the cluster view was rendered"
echo "ok   with auth on, the dashboard shows its login form and no cluster data"
echo "dashboard: all checks passed"
