"""Prints the watch rows of bench/run.sh from bench-watch's JSON lines.

  watch_table.py WATCH_JSONL [--markdown]

bench-watch has already failed the run on an error (a stream that ended or missed a change), so
this only prints: bytes per stream, idle CPU, polls per second against ids / interval (flagged
when more than 10 % off), and the delay from the poll that saw a change to its arrival on every
stream.
"""
import json
import sys


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def polls_off(r):
    """More than 10 % off ids / interval, and by more than the one poll a window of whole polls
    can miss (1 id at 2 s: 2 or 3 polls in 5 s, never 2.5)."""
    window = r.get("idle_s", 0)
    expected = r["expected_polls_per_s"] * window
    seen = r["polls_per_s"] * window
    return expected > 0 and abs(seen - expected) > max(0.10 * expected, 1.0)


def main():
    markdown = "--markdown" in sys.argv
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    head = ["row", "streams", "ids", "stalled", "open s", "RSS before MiB", "RSS open MiB",
            "bytes/stream", "RSS peak MiB", "idle CPU % of a core", "polls/s", "ids/interval",
            "deliveries", "gateway CPU µs/delivery", "delay p50 ms", "p99 ms", "max ms", "errors"]
    table = []
    for r in rows:
        expected = r["expected_polls_per_s"]
        polls = fmt(r["polls_per_s"], 1) + (" (!)" if polls_off(r) else "")
        table.append([
            r["row"], fmt(r["streams"]), fmt(r["ids"]), fmt(r["stalled"]), fmt(r["open_s"], 1),
            fmt(r["rss_before_kib"] / 1024, 1), fmt(r["rss_open_kib"] / 1024, 1),
            fmt(r["bytes_per_stream"]), fmt(r["rss_peak_kib"] / 1024, 1), fmt(r["idle_cpu_pct"], 1),
            polls, fmt(expected, 1), fmt(r["deliveries"]), fmt(r.get("cpu_us_per_delivery"), 1),
            fmt(r["delay_p50_ms"], 1),
            fmt(r["delay_p99_ms"], 1), fmt(r["delay_max_ms"], 1),
            str(r["missed"] + sum(r["ended"].values())),
        ])
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join("---" for _ in head) + " |")
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    for r in rows:
        if r["stalled"]:
            print(f"- {r['row']}: gateway RSS after each round of changes (MiB): "
                  + ", ".join(f"{k / 1024:.1f}" for k in r["rss_rounds_kib"]))
        if polls_off(r):
            print(f"- {r['row']}: polls/s {r['polls_per_s']:.1f} is more than 10 % (and one poll) off "
                  f"ids/interval {r['expected_polls_per_s']:.1f}")


if __name__ == "__main__":
    main()
