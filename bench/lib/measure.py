"""Runs one bounded load and measures what it cost: bench/run.sh calls it once per table row.

  measure.py OUT_JSONL ROW TOOL INFLIGHT NGINX_STATUS_URL PIDS -- COMMAND...

PIDS is `name=pid,name=pid,...` (gateway, envoy, nginx). Before and after COMMAND it reads each
process's utime+stime from /proc/PID/stat and nginx's stub_status request count. It parses the
tool's output (wrk, h2load with --log-file, or bench-grpc-load's JSON line) and appends one JSON
object to OUT_JSONL: calls, requests/s, latency mean/p50/p99 (µs), errors, CPU µs per call for
every process, upstream requests per call. It exits 1 only if COMMAND failed or a process died.
"""
import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; fields after the closing paren are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def nginx_counts(url):
    """(connections accepted, requests served) from stub_status."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    # "Active connections: N \nserver accepts handled requests\n A H R \n..."
    accepts, _handled, requests = text.splitlines()[2].split()
    return int(accepts), int(requests)


def machine_cpu():
    """(busy, steal, total) jiffies of all CPUs, from /proc/stat: how loaded the machine was."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq, steal, sum(v[:8])


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, round((len(sorted_values) - 1) * p))]


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["calls"] = int(m.group(1))
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def us(value, unit):
        return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]

    m = re.search(r"Latency\s+([\d.]+)(us|ms|s|m)\b", out)
    r["mean_us"] = us(*m.groups())
    for p, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{p}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\b", out, re.M)
        r[key] = us(*m.groups()) if m else None
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(x) for x in m.groups()) if m else 0
    r["errors"] = errors
    return r


def parse_h2load(out, log_file):
    r = {}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    total, started, done, succeeded, failed, errored, timeout = map(int, m.groups())
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    non2xx = sum(int(x) for x in m.groups()[1:])
    r["calls"] = done
    r["errors"] = failed + errored + timeout + non2xx
    m = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", out)
    r["rps"] = float(m.group(3))
    durations = []
    with open(log_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                durations.append(int(parts[2]))
    durations.sort()
    r["mean_us"] = sum(durations) / len(durations) if durations else None
    r["p50_us"] = percentile(durations, 0.50)
    r["p99_us"] = percentile(durations, 0.99)
    return r


def parse_loadgen(out):
    j = json.loads(out.strip().splitlines()[-1])
    return {
        "calls": j["calls"],
        "errors": j["errors"],
        "statuses": j["statuses"],
        "rps": j["rps"],
        "mean_us": j["mean_us"],
        "p50_us": j["p50_us"],
        "p99_us": j["p99_us"],
    }


def main():
    out_path, row, tool, inflight, status_url, pids_arg = sys.argv[1:7]
    assert sys.argv[7] == "--"
    command = sys.argv[8:]
    pids = dict(item.split("=") for item in pids_arg.split(","))
    log_file = None
    if tool == "h2load":
        log_file = out_path + f".{row}.h2load.log"
        command = command + [f"--log-file={log_file}"]

    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    acc0, req0 = nginx_counts(status_url)
    m0 = machine_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tool_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    wall = time.monotonic() - t0
    time.sleep(0.2)  # let the last answers' bookkeeping land before reading the counters
    try:
        cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    except FileNotFoundError as e:
        sys.exit(f"measure: a process died during {row}: {e}")
    acc1, req1 = nginx_counts(status_url)
    m1 = machine_cpu()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"measure: {row}: {command[0]} exited {proc.returncode}")

    if tool == "wrk":
        r = parse_wrk(proc.stdout)
    elif tool == "h2load":
        r = parse_h2load(proc.stdout, log_file)
    else:
        r = parse_loadgen(proc.stdout)
    calls = r["calls"]
    # The `after` stub_status request is counted in req1 itself.
    upstream = req1 - req0 - 1
    r.update(
        row=row,
        tool=tool,
        inflight=int(inflight),
        wall_s=round(wall, 3),
        upstream_requests=upstream,
        upstream_per_call=(upstream / calls) if calls else None,
        upstream_connections_opened=acc1 - acc0 - 1,
        tool_cpu_us_per_call=(tool_cpu * 1e6 / calls) if calls else None,
        # Busy CPU of the whole machine not spent by the three servers or the load tool, as a
        # share of all CPU time: other processes (another session, a build) competing with the row.
        others_cpu_pct=round(
            100
            * ((m1[0] - m0[0]) / TICK - tool_cpu - sum(cpu1[n] - cpu0[n] for n in pids))
            / max(1e-9, (m1[2] - m0[2]) / TICK),
            1,
        ),
        machine_busy_pct=round(100 * (m1[0] - m0[0]) / max(1, m1[2] - m0[2]), 1),
        machine_steal_pct=round(100 * (m1[1] - m0[1]) / max(1, m1[2] - m0[2]), 1),
        cpu_us_per_call={
            name: ((cpu1[name] - cpu0[name]) * 1e6 / calls) if calls else None for name in pids
        },
    )
    with open(out_path, "a") as f:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
