#!/usr/bin/env python3
"""Where the time of one idle order goes, hop by hop (issue #11, "short hops").

Against a running case-3 stack (`infra/stack up`), places N orders one at a time, each
waiting for its payment page by long polling (`Prefer: wait=10`), then reads the stored
timestamps of every step from the two databases:

  order tx ─relay→ OrderPlaced published ─broker→ payment's REQUESTED row
  ─Kakao Pay ready + commit→ PaymentReady written ─relay→ published ─broker→ order
  consumes PaymentReady (its inbox row) ─NOTIFY→ the long poll answers

Prints the median POST → redirect-visible time and the median of each hop. PostgreSQL's
`now()` is the transaction's start, so a row's time is when its transaction began.

Usage: python3 benchmarks/hops.py [N]   (default 30; needs psql and the stack's
ORDER_PORT 8081 and databases `orders` / `payments` on 127.0.0.1:5432)
"""

import json
import statistics
import subprocess
import sys
import time
import urllib.request

ORDER_URL = "http://127.0.0.1:8081"


def request(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method,
        headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=40) as resp:
        return json.loads(resp.read() or b"null"), dict(resp.headers)


def place_and_wait(n):
    """Places one order; returns (its id, ms until its redirect URL was visible)."""
    started = time.monotonic()
    order, _ = request("POST", ORDER_URL + "/orders", {
        "customer_id": "hops", "customer_email": f"hops{n}@example.com",
        "items": [{"name": "Pie", "quantity": 1, "unit_price": 5000}]})
    etag = None
    while True:
        headers = {"Prefer": "wait=10"}
        if etag:
            headers["If-None-Match"] = etag
        seen, answer = request("GET", f"{ORDER_URL}/orders/{order['id']}", headers=headers)
        etag = answer.get("ETag") or answer.get("etag")
        if seen and (seen.get("payment") or {}).get("redirect_url"):
            return order["id"], (time.monotonic() - started) * 1000


def query(db, sql):
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-At", "-F", "|", "-c", sql],
        capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.strip().splitlines()]


def timestamps(ids):
    """Per order: the epoch seconds of every step the databases stored."""
    keys = ",".join(f"'{i}'" for i in ids)
    rows = {oid: {"created": float(at)} for oid, at in query(
        "orders", f"select id, extract(epoch from created_at) from orders where id in ({keys})")}
    events = {}
    for db, side in [("orders", "o"), ("payments", "p")]:
        for key, kind, event_id, created, published in query(db, (
                "select message_key, event_type, event_id, extract(epoch from created_at), "
                f"extract(epoch from published_at) from outbox where message_key in ({keys})")):
            events[event_id] = (key, kind)
            rows[key][f"{side}.out.{kind}.created"] = float(created)
            rows[key][f"{side}.out.{kind}.published"] = float(published) if published else None
    event_ids = ",".join(f"'{e}'" for e in events)
    for db, side in [("orders", "o"), ("payments", "p")]:
        for event_id, at in query(db, (
                "select event_id, extract(epoch from processed_at) from processed_events "
                f"where event_id in ({event_ids})")):
            key, kind = events[event_id]
            rows[key][f"{side}.in.{kind}"] = float(at)
    for oid, at in query("payments", (
            f"select order_id, extract(epoch from created_at) from payments where order_id in ({keys})")):
        rows[oid]["p.requested"] = float(at)
    return rows


HOPS = [
    ("order tx → OrderPlaced published (relay)", "created", "o.out.OrderPlaced.published"),
    ("OrderPlaced published → payment's REQUESTED row (broker, fetch, engine)",
     "o.out.OrderPlaced.published", "p.requested"),
    ("REQUESTED → PaymentReady written (Kakao Pay ready + commit)",
     "p.requested", "p.out.PaymentReady.created"),
    ("PaymentReady written → published (relay)",
     "p.out.PaymentReady.created", "p.out.PaymentReady.published"),
    ("PaymentReady published → order consumes it (broker+fetch)",
     "p.out.PaymentReady.published", "o.in.PaymentReady"),
    ("order tx → order consumes PaymentReady", "created", "o.in.PaymentReady"),
]


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    ids, visible = [], []
    for n in range(count):
        oid, ms = place_and_wait(n)
        ids.append(oid)
        visible.append(ms)
        time.sleep(0.3)  # idle: one order at a time, the stack quiet in between
    print("POST -> redirect visible ms: median %.1f, all %s"
          % (statistics.median(visible), [round(v) for v in visible]))
    rows = timestamps(ids).values()
    for name, start, end in HOPS:
        spans = [(r[end] - r[start]) * 1000 for r in rows if r.get(start) and r.get(end)]
        print(f"{name}: median {statistics.median(spans):.1f} ms  "
              f"(n={len(spans)}, min {min(spans):.1f}, max {max(spans):.1f})")


if __name__ == "__main__":
    main()
