"""Renders every Kustomize overlay of deploy/kubernetes/overlays (with pykustomize: the
kustomize/api library itself, built into the package) into OUT/<overlay>.yaml and
OUT/<overlay>.json, and checks what a schema cannot: that the rendered objects agree with the
configuration file they mount and with the way the gateway runs there.

    python overlays.py OUT        (deploy/validate.sh runs it from deploy/.venv)

Per overlay: one scrape path (pod annotations or a ServiceMonitor, not both, and none on the
Service); images fully qualified (a registry host, a tag or digest, never `latest`); the gRPC
Service port's appProtocol is what the configuration makes of the port (TLS terminated by the
pod: `tls`; plaintext HTTP/2 behind a mesh sidecar: `grpc`; a loopback listener: no Service
port); with a mesh identity header, a NetworkPolicy admits the gRPC port only from selected peers;
every file the configuration names lies under a volume mount, and a ConfigMap's key exists; the
container ports and probes are the configuration's; the termination grace period covers the
drain. Prints PASS/FAIL lines; exits 1 on any failure.
"""

import asyncio
import ipaddress
import json
import sys
import tomllib
from pathlib import Path

from pykustomize import build, build_json

HERE = Path(__file__).resolve().parent
OVERLAYS = HERE / "kubernetes" / "overlays"
FILE_KEYS = ("tls-cert", "tls-key", "tls-client-ca", "authz-policy", "upstream-ca-file",
             "oms-api-key-file", "oms-api-secret-file", "webhook-secret-file")
failed = 0


def check(ok, what, why=""):
    global failed
    if ok:
        print(f"PASS {what}")
    else:
        failed += 1
        print(f"FAIL {what}{': ' + why if why else ''}")


def seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "").isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def qualified(image):
    name, _, rest = image.partition("@")
    first = name.split("/")[0]
    tagged = bool(rest) or (":" in name.split("/")[-1] and not name.endswith(":latest"))
    return "/" in name and ("." in first or ":" in first or first == "localhost") and tagged


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    return found[0] if len(found) == 1 else None


def check_overlay(name, docs):
    deployment = one(docs, "Deployment")
    check(deployment is not None, f"{name}: one Deployment")
    if deployment is None:
        return
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1]
    mounts = container.get("volumeMounts", [])
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}

    def source(path):
        """The volume and the key within it that serve `path`, if a mount covers it."""
        for mount in mounts:
            prefix = mount["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix):
                return volumes.get(mount["name"]), path[len(prefix):]
        return None, None

    volume, key = source(config_path)
    config_map = configmaps.get((volume or {}).get("configMap", {}).get("name"))
    check(config_map is not None and key in config_map.get("data", {}),
          f"{name}: --config {config_path} is a key of the mounted ConfigMap")
    if config_map is None or key not in config_map.get("data", {}):
        return
    config = tomllib.loads(config_map["data"][key])

    # Every file the configuration names is mounted (and, from a ConfigMap, present).
    for file_key in FILE_KEYS:
        if file_key not in config:
            continue
        path = config[file_key]
        volume, key = source(path)
        ok = volume is not None
        if ok and "configMap" in volume:
            ok = key in configmaps.get(volume["configMap"]["name"], {}).get("data", {})
        if ok and "secret" in volume and "items" in volume["secret"]:
            ok = key in [item["path"] for item in volume["secret"]["items"]]
        check(ok, f"{name}: {file_key} = {path} is mounted")

    # Ports and probes are the configuration's.
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    listen = config.get("listen", "127.0.0.1:50051")
    loopback = ipaddress.ip_address(listen.rsplit(":", 1)[0].strip("[]")).is_loopback
    if not loopback:
        check(ports.get("grpc") == port_of(listen), f"{name}: containerPort grpc is --listen's")
    check(ports.get("health") == port_of(config.get("health-listen", ":0")),
          f"{name}: containerPort health is --health-listen's")
    check(ports.get("admin") == port_of(config.get("admin-listen", ":0")),
          f"{name}: containerPort admin is --admin-listen's")
    probe_ports = {container[p]["grpc"]["port"] for p in ("readinessProbe", "livenessProbe")}
    check(probe_ports == {ports.get("health")}, f"{name}: the probes ask the health port")
    drain = seconds(config.get("drain-delay", "5s")) + seconds(config.get("shutdown-grace", "20s"))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    check(grace > drain, f"{name}: terminationGracePeriodSeconds {grace} > drain + grace {drain:g}")

    # Fully qualified images.
    for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        check(qualified(c["image"]), f"{name}: image {c['image']} is fully qualified")

    # The gRPC Service port's appProtocol says who terminates TLS.
    service = one(docs, "Service")
    grpc = [p for p in (service or {}).get("spec", {}).get("ports", []) if p["name"] == "grpc"]
    if "tls-cert" in config:
        want = "tls"
    elif "caller-identity-header" in config:
        want = "grpc"
    else:
        want = None if loopback else "kubernetes.io/h2c"
    got = grpc[0].get("appProtocol") if grpc else None
    check(got == want and (bool(grpc) == (want is not None)),
          f"{name}: the gRPC Service port is {'absent' if want is None else 'appProtocol ' + want}",
          f"found {grpc}")

    # One scrape path.
    annotated = pod["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    service_annotated = any(k.startswith("prometheus.io/")
                            for k in (service or {}).get("metadata", {}).get("annotations", {}))
    check(annotated != bool(monitors) and not service_annotated,
          f"{name}: one scrape path ({'pod annotations' if annotated else 'ServiceMonitor'})",
          f"pod annotations {annotated}, ServiceMonitors {len(monitors)}, Service annotations {service_annotated}")
    for monitor in monitors:
        endpoints = [e.get("port") for e in monitor["spec"]["endpoints"]]
        service_ports = [p["name"] for p in (service or {}).get("spec", {}).get("ports", [])]
        check(endpoints == ["admin"] and "admin" in service_ports,
              f"{name}: the ServiceMonitor scrapes the Service's admin port")

    # Behind a mesh: nothing reaches the gRPC port around the sidecars.
    if "caller-identity-header" in config:
        labels = pod["metadata"].get("labels", {})
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"
                    and all(labels.get(k) == v for k, v in
                            d["spec"]["podSelector"].get("matchLabels", {}).items())
                    and "Ingress" in d["spec"].get("policyTypes", [])]
        rules = [r for p in policies for r in p["spec"].get("ingress", [])]
        grpc_rules = [r for r in rules
                      if not r.get("ports") or any(p.get("port") in ("grpc", ports.get("grpc"))
                                                   for p in r["ports"])]
        check(bool(policies) and grpc_rules and all(r.get("from") for r in grpc_rules),
              f"{name}: a NetworkPolicy admits the gRPC port only from selected peers (the mesh)",
              f"{len(policies)} policies, gRPC rules {grpc_rules}")


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    overlays = sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())
    check(len(overlays) >= 3, f"{len(overlays)} overlays: {', '.join(p.name for p in overlays)}")
    for overlay in overlays:
        try:
            rendered = asyncio.run(build(str(overlay)))
            docs = asyncio.run(build_json(str(overlay))).resources
        except Exception as e:  # the library's errors name the file and the field
            check(False, f"{overlay.name}: kustomize renders it", str(e))
            continue
        (out / f"{overlay.name}.yaml").write_text(rendered.yaml)
        (out / f"{overlay.name}.json").write_text(json.dumps(docs))
        kinds = sorted(d["kind"] for d in docs)
        check(True, f"{overlay.name}: kustomize renders it ({', '.join(kinds)})")
        check_overlay(overlay.name, docs)
    print(f"{'overlays: all checks passed' if failed == 0 else f'overlays: {failed} failed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
