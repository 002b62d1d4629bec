"""etcd3gw (the Python client of etcd's JSON gateway) against keel: every
call a real application makes through it, with its answers checked.

Usage: python3 etcd3gw_check.py HOST:PORT [HOST:PORT ...]  (the first is
written through, the rest read and watched through)."""

import sys
import threading
import time

from etcd3gw.client import Etcd3Client


def client(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return Etcd3Client(host=host, port=int(port), api_path="/v3/", timeout=10)


def check(what, got, want):
    if got != want:
        sys.exit(f"etcd3gw: {what}: got {got!r}, want {want!r}")
    print(f"ok   {what}")


def main():
    endpoints = sys.argv[1:]
    writer = client(endpoints[0])
    readers = [client(e) for e in endpoints[1:]] or [writer]

    # Status (once a leader is elected) and members.
    deadline = time.time() + 20
    status = writer.status()
    while "leader" not in status and time.time() < deadline:
        time.sleep(0.2)
        status = writer.status()
    check("status names a leader", int(status.get("leader", "0")) != 0, True)
    check("members", len(writer.members()), len(endpoints))

    # put, get, prefix, metadata.
    writer.delete_prefix("app/")
    check("put", writer.put("app/a", "1"), True)
    writer.put("app/b", "2")
    for r in readers:
        check("get through another member", r.get("app/a"), [b"1"])
    check("get_prefix", sorted(v for v, _ in writer.get_prefix("app/")), [b"1", b"2"])
    value, meta = writer.get("app/a", metadata=True)[0]
    check("get with metadata", (value, meta["key"], meta["version"]), (b"1", b"app/a", "1"))
    check("get sorted", [m["key"] for _, m in writer.get_prefix("app/", sort_order="descend", sort_target="key")], [b"app/b", b"app/a"])

    # Transactions: create only if absent, compare-and-swap.
    check("create (absent)", writer.create("app/c", "x"), True)
    check("create (present)", writer.create("app/c", "y"), False)
    check("replace (matching)", writer.replace("app/c", "x", "z"), True)
    check("replace (stale)", writer.replace("app/c", "x", "w"), False)
    check("after the swaps", writer.get("app/c"), [b"z"])

    # Delete.
    check("delete", writer.delete("app/c"), True)
    check("delete (absent)", writer.delete("app/c"), False)
    check("get (absent)", writer.get("app/c"), [])

    # Leases: grant, attach, keep alive, time to live, keys, revoke.
    lease = writer.lease(ttl=30)
    writer.put("app/leased", "v", lease=lease)
    check("lease refresh (keep-alive)", lease.refresh(), 30)
    ttl = lease.ttl()
    check("lease ttl", 25 <= ttl <= 30, True)
    check("lease keys", lease.keys(), [b"app/leased"])
    check("lease revoke", lease.revoke(), True)
    check("the leased key went with it", writer.get("app/leased"), [])

    # A lock: held, then taken by another once released.
    lock = writer.lock("app-lock", ttl=10)
    check("lock acquire", lock.acquire(), True)
    other = readers[0].lock("app-lock", ttl=10)
    check("a held lock is not acquired twice", other.acquire(), False)
    check("lock release", lock.release(), True)
    check("acquired after release", other.acquire(), True)
    other.release()

    # Watches through another member: one event, and a stream of a prefix.
    watcher = readers[0]
    got = {}

    def once():
        got["event"] = watcher.watch_once("app/w", timeout=10)

    thread = threading.Thread(target=once)
    thread.start()
    time.sleep(1)
    writer.put("app/w", "seen")
    thread.join()
    event = got["event"]
    check("watch_once", (event["kv"]["key"], event["kv"]["value"]), (b"app/w", b"seen"))

    events, cancel = watcher.watch_prefix("app/p/")
    time.sleep(1)
    writer.put("app/p/1", "a")
    writer.delete("app/p/1")
    first, second = next(events), next(events)
    cancel()
    check("watch_prefix put", (first["kv"]["key"], first["kv"]["value"]), (b"app/p/1", b"a"))
    check("watch_prefix delete", (second.get("type"), second["kv"]["key"]), ("DELETE", b"app/p/1"))

    print("etcd3gw: all checks passed")


if __name__ == "__main__":
    main()
