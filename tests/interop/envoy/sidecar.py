#!/usr/bin/env python3
"""Helpers for tests/interop/envoy-sidecar.sh: Envoy's admin API and the standalone sandbox's
fault plan, over loopback HTTP (standard library only).

Usage:
  sidecar.py flags     --admin URL --cluster NAME
      Prints the health_flags of the cluster's hosts (Envoy admin /clusters), one per line.
  sidecar.py wait-flag --admin URL --cluster NAME --want healthy|unhealthy --timeout S
      Waits (bounded) until every host of the cluster is healthy, or until one carries
      /failed_active_hc; prints the seconds it took and the flags; exit 1 on timeout.
  sidecar.py stat      --admin URL --name STAT
      Prints the value of one Envoy counter or gauge (admin /stats), 0 when it is absent.
  sidecar.py arm-reset --sandbox URL
      Finds a seed under which the fault plan `reset_after=0.5` resets the first request under
      /cash-ins after handling it (the cash-in is created, the answer is lost) and lets the second
      through, by probing with two harmless GETs; then sets that plan afresh (which reseeds it),
      so the next two /cash-ins requests meet exactly that. Prints the plan.
  sidecar.py faults    --sandbox URL [--set SPEC]
      Prints GET /sandbox/faults (after PUT SPEC when --set is given) as JSON.

The sandbox's API key and secret come from OMS_SANDBOX_API_KEY / OMS_SANDBOX_API_SECRET (the
same variables `oms-gateway sandbox` reads); the secret is never printed.
"""

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request

TIMEOUT = 5.0


def get(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        return r.read().decode()


# === Envoy admin ===


def host_flags(admin, cluster):
    """{host: health_flags} of the cluster's hosts, from /clusters' text output."""
    flags = {}
    for line in get(f"{admin}/clusters").splitlines():
        parts = line.split("::")
        if len(parts) >= 4 and parts[0] == cluster and parts[2] == "health_flags":
            flags[parts[1]] = parts[3]
    return flags


def wait_flag(admin, cluster, want, timeout):
    start = time.monotonic()
    last = {}
    while time.monotonic() - start < timeout:
        try:
            last = host_flags(admin, cluster)
        except OSError as e:
            last = {"admin": f"{type(e).__name__}: {e}"}
        values = list(last.values())
        if want == "healthy" and values and all(v == "healthy" for v in values):
            break
        if want == "unhealthy" and any("/failed_active_hc" in v for v in values):
            break
        time.sleep(0.05)
    else:
        print(f"after {timeout:.1f}s: {json.dumps(last)}")
        return 1
    print(f"{time.monotonic() - start:.2f}s {json.dumps(last)}")
    return 0


def stat(admin, name):
    for line in get(f"{admin}/stats?filter=^{name}$").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return value.strip()
    return "0"


# === the standalone sandbox ===


def token(sandbox):
    creds = {
        "apiKey": os.environ.get("OMS_SANDBOX_API_KEY", "sk_sdbx_local"),
        "apiSecret": os.environ["OMS_SANDBOX_API_SECRET"],
    }
    req = urllib.request.Request(
        f"{sandbox}/auth/token",
        data=json.dumps(creds).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return json.load(r)["accessToken"]


def faults(sandbox, bearer, spec=None):
    method = "GET" if spec is None else "PUT"
    req = urllib.request.Request(
        f"{sandbox}/sandbox/faults",
        data=None if spec is None else spec.encode(),
        headers={"authorization": f"Bearer {bearer}", "content-type": "text/plain"},
        method=method,
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return json.load(r)


def probe(sandbox, bearer):
    """One GET under /cash-ins: 'reset' when the connection drops, else the HTTP status."""
    req = urllib.request.Request(
        f"{sandbox}/cash-ins/ci_probe", headers={"authorization": f"Bearer {bearer}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except (ConnectionError, http.client.HTTPException, urllib.error.URLError):
        return "reset"


def arm_reset(sandbox):
    bearer = token(sandbox)
    for seed in range(1, 500):
        spec = f"seed={seed},reset_after=0.5"
        faults(sandbox, bearer, spec)
        if probe(sandbox, bearer) == "reset" and probe(sandbox, bearer) != "reset":
            plan = faults(sandbox, bearer, spec)  # afresh: reseeded, counts zeroed
            print(plan["spec"])
            return 0
    faults(sandbox, bearer, "none")
    print("no seed in 1..499 resets the first request and not the second")
    return 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("flags", "wait-flag", "stat", "arm-reset", "faults"))
    p.add_argument("--admin", help="Envoy admin base URL")
    p.add_argument("--cluster", help="Envoy cluster name")
    p.add_argument("--want", choices=("healthy", "unhealthy"), default="healthy")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--name", help="stat: the stat's full name")
    p.add_argument("--sandbox", help="base URL of `oms-gateway sandbox`")
    p.add_argument("--set", help="faults: PUT this spec first")
    a = p.parse_args()
    if a.mode == "flags":
        for host, flags in sorted(host_flags(a.admin, a.cluster).items()):
            print(f"{host} {flags}")
        return 0
    if a.mode == "wait-flag":
        return wait_flag(a.admin, a.cluster, a.want, a.timeout)
    if a.mode == "stat":
        print(stat(a.admin, a.name))
        return 0
    if a.mode == "arm-reset":
        return arm_reset(a.sandbox)
    print(json.dumps(faults(a.sandbox, token(a.sandbox), a.set)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
