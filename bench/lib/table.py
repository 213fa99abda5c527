"""Prints bench/run.sh's table from measure.py's JSONL and decides the exit status.

  table.py RESULTS_JSONL [--markdown]

Exit 1 only on errors (non-2xx, non-OK grpc-status, socket errors, timeouts) or when upstream
requests per call is not 1. A timed run stops with up to `in flight` calls unanswered, which
nginx may already have served, and the gateway exchanges a token now and then: so every row must
have calls <= upstream requests <= calls + in flight + TOKEN_SLACK. Never on timings: these
machines are shared and noisy.
"""
import json
import sys

TOKEN_SLACK = 2
ROWS = [
    ("rest-get-1", "GET direct REST (wrk → nginx)"),
    ("gateway-get-1", "GetCashIn via gateway (h2load)"),
    ("gateway-busy-poll-get-1", "GetCashIn via gateway, --busy-poll 200us (h2load)"),
    ("envoy-get-1", "GetCashIn via Envoy (h2load)"),
    ("rest-get-64", "GET direct REST (wrk → nginx)"),
    ("gateway-get-64", "GetCashIn via gateway (h2load)"),
    ("gateway-default-get-64", "GetCashIn via gateway, default workers (one per CPU) (h2load)"),
    ("envoy-get-64", "GetCashIn via Envoy (h2load)"),
    ("gateway-create-1", "CreateCashIn via gateway (h2 client)"),
    ("gateway-create-64", "CreateCashIn via gateway (h2 client)"),
]


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def main():
    path = sys.argv[1]
    markdown = "--markdown" in sys.argv
    results = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            results[r["row"]] = r

    head = ["what", "in flight", "calls", "req/s", "mean µs", "p50 µs", "p99 µs",
            "gateway CPU µs/call", "Envoy CPU µs/call", "nginx CPU µs/call", "upstream req/call", "upstream conns opened", "errors", "load tool CPU µs/call", "others' CPU % (tick-sampled)"]
    body = []
    problems = []
    for key, label in ROWS:
        r = results.get(key)
        if r is None:
            continue
        cpu = r["cpu_us_per_call"]
        via_gateway = key.startswith("gateway")
        via_envoy = key.startswith("envoy")
        body.append([
            label,
            "1" if r["inflight"] == 1 else f"{r['inflight']} (4×16)" if r["tool"] != "wrk" else f"{r['inflight']} conns",
            fmt(r["calls"]),
            fmt(r["rps"]),
            fmt(r["mean_us"]),
            fmt(r["p50_us"]),
            fmt(r["p99_us"]),
            fmt(cpu.get("gateway"), 1) if via_gateway else "–",
            fmt(cpu.get("envoy"), 1) if via_envoy else "–",
            fmt(cpu.get("nginx"), 1),
            fmt(r["upstream_per_call"], 3),
            fmt(r.get("upstream_connections_opened")),
            fmt(r["errors"]) + (f" {r['statuses']}" if r.get("errors") and r.get("statuses") else ""),
            fmt(r.get("tool_cpu_us_per_call"), 1),
            fmt(r.get("others_cpu_pct"), 1) + (f" (steal {r['machine_steal_pct']})" if r.get("machine_steal_pct") else ""),
        ])
        if r["errors"]:
            problems.append(f"{key}: {r['errors']} errors {r.get('statuses', '')}")
        calls, upstream = r["calls"], r["upstream_requests"]
        if not calls or not (calls <= upstream <= calls + r["inflight"] + TOKEN_SLACK):
            problems.append(f"{key}: {upstream} upstream requests for {calls} calls "
                            f"({fmt(upstream / calls if calls else None, 4)} per call), not 1 per call")

    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(" --- " for _ in head) + "|")
        for row in body:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        print("  ".join("-" * w for w in widths))
        for row in body:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print()

    def get(key, *path):
        v = results.get(key)
        for p in path:
            v = None if v is None else v.get(p)
        return v

    ratios = [("1", "gateway", "one worker, as Envoy's --concurrency 1"),
              ("1", "gateway-busy-poll", "one worker, --busy-poll 200us"),
              ("64", "gateway", "one worker, as Envoy's --concurrency 1"),
              ("64", "gateway-default", "default workers, one per CPU")]
    for n, who, what in ratios:
        g, e = get(f"{who}-get-{n}", "cpu_us_per_call", "gateway"), get(f"envoy-get-{n}", "cpu_us_per_call", "envoy")
        if g and e:
            print(f"gateway ({what})/Envoy CPU per GetCashIn at {n} in flight: {g:.1f} / {e:.1f} µs = {g / e:.2f}× (target ≤ 0.40×: {'reached' if g / e <= 0.40 else 'not yet reached'} in this run)")
    rest = get("rest-get-1", "p50_us"), get("rest-get-1", "mean_us")
    for who, what in (("gateway", "one worker"), ("gateway-busy-poll", "one worker, --busy-poll 200us"), ("envoy", "Envoy")):
        p50, mean = get(f"{who}-get-1", "p50_us"), get(f"{who}-get-1", "mean_us")
        if p50 is not None and rest[0] is not None:
            print(f"added latency over direct REST at 1 in flight, {what}: p50 +{p50 - rest[0]:.0f} µs, mean +{mean - rest[1]:.0f} µs"
                  + ((" (target ≤ 50 µs: " + ("reached" if p50 - rest[0] <= 50 else "not yet reached") + " in this run)") if who != "envoy" else ""))
    if problems:
        print("\nFAILED:")
        for p in problems:
            print("  " + p)
        sys.exit(1)
    print("no errors; one upstream request per call on every row")


if __name__ == "__main__":
    main()
