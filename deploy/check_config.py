#!/usr/bin/env python3
"""Checks that the deployment files agree with the broker they deploy.

What the broker accepts is read from its source: the `HERMOD_*` variables of
`hermod serve` and their types (broker/src/config.rs), the default gRPC and
admin ports (same file) and the admin HTTP routes (broker/src/admin.rs). When
a `hermod` binary is at hand (HERMOD_BINARY, or a build in the cargo target
directory newer than the broker's sources), `hermod serve --help` must list
the same variables. Then every HERMOD_*
setting, port and probe path in deploy/Dockerfile, deploy/docker-compose.yml
and deploy/k8s/*.yaml is checked against them. Exits 1 naming each mismatch.

usage: check_config.py [REPO_ROOT]   (needs PyYAML)
"""

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# --- what the broker accepts ------------------------------------------------


def serve_settings():
    """{HERMOD_NAME: (flag, rust type)} of the ServeArgs struct."""
    source = (ROOT / "broker/src/config.rs").read_text()
    body = re.search(r"pub struct ServeArgs \{(.*?)\n\}", source, re.S).group(1)
    settings = {}
    for attr, field, kind in re.findall(r"#\[arg\(([^\]]*)\)\]\s*pub (\w+): ([^,\n]+),", body):
        env = re.search(r'env = "(HERMOD_\w+)"', attr)
        if env:
            settings[env.group(1)] = ("--" + field.replace("_", "-"), kind.strip())
    return settings


def default_port(name):
    source = (ROOT / "broker/src/config.rs").read_text()
    return int(re.search(rf'pub const {name}: &str = "[^"]*:(\d+)";', source).group(1))


def admin_routes():
    """{path: method} of the admin HTTP router."""
    source = (ROOT / "broker/src/admin.rs").read_text()
    return {path: method for path, method in re.findall(r'\.route\("([^"]+)",\s*(get|post)\(', source)}


def find_binary():
    """HERMOD_BINARY, else a `hermod` of the cargo target directory newer than
    every broker source (an older one may predate the config.rs read here)."""
    if os.environ.get("HERMOD_BINARY"):
        return os.environ["HERMOD_BINARY"]
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/hermod/target"))
    newest_source = max(p.stat().st_mtime for p in (ROOT / "broker/src").rglob("*.rs"))
    for candidate in (f"{target}/debug/hermod", f"{target}/release/hermod"):
        if os.access(candidate, os.X_OK) and os.stat(candidate).st_mtime >= newest_source:
            return candidate
    return None


def check_help(settings):
    binary = find_binary()
    if binary is None:
        print("check_config: no hermod binary newer than broker/src; `hermod serve --help` not compared")
        return
    text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"\[env: (HERMOD_\w+)=", text))
    if listed != set(settings):
        problem(binary, f"`serve --help` lists {sorted(listed ^ set(settings))} unlike config.rs")
    for env, (flag, _) in settings.items():
        if flag not in text:
            problem(binary, f"`serve --help` has no {flag} (for {env})")
    print(f"check_config: `{binary} serve --help` lists the {len(listed)} variables of config.rs")


SETTINGS = serve_settings()
GRPC_PORT = default_port("DEFAULT_LISTEN")
ADMIN_PORT = default_port("DEFAULT_ADMIN_LISTEN")
ROUTES = admin_routes()
# Variables the deployment files may set besides the broker's own.
OTHER_VARS = {"POD_NAME", "POD_NAMESPACE", "RUST_LOG", "RUST_BACKTRACE"}

# --- checks shared by every file --------------------------------------------


def port_of(address):
    return int(str(address).rsplit(":", 1)[1])


def check_env(where, env):
    """Every HERMOD_* name is known and its value fits its type."""
    for name, value in env.items():
        if name not in SETTINGS:
            if name not in OTHER_VARS:
                problem(where, f"{name} is not a setting of `hermod serve`")
            continue
        kind, value = SETTINGS[name][1], str(value)
        if "$(" in value:
            continue  # expanded by Kubernetes
        try:
            if "bool" in kind and value not in ("true", "false"):
                raise ValueError("not true or false")
            if re.search(r"\bu(32|64)\b", kind) and not value.isdigit():
                raise ValueError("not a whole number")
            if "SocketAddr" in kind:
                host, port = value.rsplit(":", 1)
                ipaddress.ip_address(host.strip("[]"))
                int(port)
            if name == "HERMOD_DISCOVERY" and not re.fullmatch(r"dns:[^:]+:\d+", value):
                raise ValueError("not dns:NAME:PORT")
            if name in ("HERMOD_ADVERTISE", "HERMOD_SEEDS"):
                for address in value.split(","):
                    if not re.fullmatch(r"[^:\s]+:\d+", address):
                        raise ValueError(f"{address!r} is not host:port")
        except ValueError as e:
            problem(where, f"{name}={value!r}: {e}")
    heartbeat = int(env.get("HERMOD_HEARTBEAT_INTERVAL_MS", 250))
    election = int(env.get("HERMOD_ELECTION_TIMEOUT_MS", 1000))
    if election < 3 * heartbeat:
        problem(where, "HERMOD_ELECTION_TIMEOUT_MS is under three heartbeat intervals")
    for name, default in (("HERMOD_LISTEN", GRPC_PORT), ("HERMOD_ADMIN_LISTEN", ADMIN_PORT)):
        if name in env and port_of(env[name]) != default:
            problem(where, f"{name} port {port_of(env[name])} is not the broker's default {default}")


def check_probe_path(where, path):
    if ROUTES.get(path) != "get":
        problem(where, f"probe path {path} is not a GET route of broker/src/admin.rs")


# --- Dockerfile ---------------------------------------------------------------


def check_dockerfile():
    where = "deploy/Dockerfile"
    text = (ROOT / where).read_text().replace("\\\n", " ")
    env = dict(re.findall(r"(HERMOD_\w+)=(\S+)", "\n".join(re.findall(r"^ENV (.*)$", text, re.M))))
    check_env(where, env)
    exposed = {int(p) for p in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split()}
    if exposed != {port_of(env["HERMOD_LISTEN"]), port_of(env["HERMOD_ADMIN_LISTEN"])}:
        problem(where, f"EXPOSE {sorted(exposed)} differs from the listen ports")
    for path in re.findall(r"HEALTHCHECK .*hermod-probe\", \"([^\"]+)\"", text):
        check_probe_path(where, path)
    return env


# --- docker-compose.yml ---------------------------------------------------------


def check_compose(image_env):
    where = "deploy/docker-compose.yml"
    services = yaml.safe_load((ROOT / where).read_text())["services"]
    expected_hosts = {f"hermod{n}": (7400 + 10 * (n - 1), 7401 + 10 * (n - 1)) for n in range(1, 5)}
    if set(services) != set(expected_hosts):
        problem(where, f"services {sorted(services)} are not hermod1..hermod4")
    forming = [name for name, s in services.items() if "HERMOD_EXPECT_NODES" in s.get("environment", {})]
    for name, service in services.items():
        here = f"{where} {name}"
        env = {**image_env, **service.get("environment", {})}
        check_env(here, env)
        grpc, admin = port_of(env["HERMOD_LISTEN"]), port_of(env["HERMOD_ADMIN_LISTEN"])
        published = {}
        for mapping in service.get("ports", []):
            bind, host, container = str(mapping).rsplit(":", 2)
            if bind != "127.0.0.1":
                problem(here, f"port {mapping} is not bound to 127.0.0.1")
            published[int(container)] = int(host)
        if name in expected_hosts and published != dict(zip((grpc, admin), expected_hosts[name])):
            problem(here, f"publishes {published}, expected {dict(zip((grpc, admin), expected_hosts[name]))}")
        if env.get("HERMOD_ADVERTISE") != f"{service.get('hostname', name)}:{grpc}":
            problem(here, f"HERMOD_ADVERTISE {env.get('HERMOD_ADVERTISE')} is not {name}:{grpc}")
        for seed in env.get("HERMOD_SEEDS", "").split(","):
            host, port = seed.rsplit(":", 1)
            if host not in services or int(port) != grpc:
                problem(here, f"seed {seed} is not the gRPC port of a service")
        if "HERMOD_EXPECT_NODES" in service.get("environment", {}):
            if int(env["HERMOD_EXPECT_NODES"]) != len(forming):
                problem(here, f"HERMOD_EXPECT_NODES is not {len(forming)}, the nodes that form the cluster")
        test = service.get("healthcheck", {}).get("test", [])
        if "/usr/local/bin/hermod-probe" not in test:
            problem(here, "the health check does not run hermod-probe")
        for arg in test:
            if str(arg).startswith("/health") or str(arg).startswith("/api"):
                check_probe_path(here, arg)
        if not any(str(v).endswith(":" + env["HERMOD_DATA_DIR"]) for v in service.get("volumes", [])):
            problem(here, f"no volume is mounted on HERMOD_DATA_DIR {env['HERMOD_DATA_DIR']}")


# --- Kubernetes -------------------------------------------------------------------


def check_kubernetes():
    objects = {}
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    config = next(o for (kind, _), o in objects.items() if kind == "ConfigMap")["data"]
    check_env("deploy/k8s/configmap.yaml", config)
    sts = next(o for (kind, _), o in objects.items() if kind == "StatefulSet")
    where = "deploy/k8s/statefulset.yaml"
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {**config, **{e["name"]: e.get("value", "") for e in container.get("env", [])}}
    check_env(where, env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if ports != {"grpc": port_of(env["HERMOD_LISTEN"]), "admin": port_of(env["HERMOD_ADMIN_LISTEN"])}:
        problem(where, f"container ports {ports} differ from HERMOD_LISTEN / HERMOD_ADMIN_LISTEN")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            problem(where, f"{probe} is not an HTTP GET")
            continue
        check_probe_path(f"{where} {probe}", get["path"])
        if ports.get(get["port"], get["port"]) != ports["admin"]:
            problem(where, f"{probe} port {get['port']} is not the admin port")
    if container["readinessProbe"]["httpGet"]["path"] != "/health/ready":
        problem(where, "readinessProbe is not /health/ready")
    if container["livenessProbe"]["httpGet"]["path"] != "/health/live":
        problem(where, "livenessProbe is not /health/live")
    annotations = sts["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/path" in annotations:
        check_probe_path(f"{where} prometheus.io/path", annotations["prometheus.io/path"])
        if int(annotations["prometheus.io/port"]) != ports["admin"]:
            problem(where, "prometheus.io/port is not the admin port")
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if env["HERMOD_DATA_DIR"] not in mounts:
        problem(where, f"nothing is mounted on HERMOD_DATA_DIR {env['HERMOD_DATA_DIR']}")
    if int(env["HERMOD_EXPECT_NODES"]) != sts["spec"]["replicas"]:
        problem(where, "HERMOD_EXPECT_NODES differs from the replicas")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        problem(where, "podManagementPolicy must be Parallel (a pod is ready only with a quorum)")
    headless_name, headless_port = re.fullmatch(r"dns:([^:]+):(\d+)", env["HERMOD_DISCOVERY"]).groups()
    if sts["spec"]["serviceName"] != headless_name:
        problem(where, f"serviceName is not {headless_name}, the HERMOD_DISCOVERY name")
    if int(headless_port) != ports["grpc"] or f".{headless_name}." not in env["HERMOD_ADVERTISE"]:
        problem(where, "HERMOD_DISCOVERY / HERMOD_ADVERTISE do not name the headless service's gRPC port")
    security = pod.get("securityContext", {})
    if not security.get("runAsNonRoot") or not security.get("runAsUser"):
        problem(where, "the pod does not run as a non-root user")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for (kind, name), obj in objects.items():
        if kind != "Service":
            continue
        here = f"deploy/k8s service {name}"
        if obj["spec"]["selector"] != labels:
            problem(here, "the selector does not match the pods' labels")
        for port in obj["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if target not in ports and target not in ports.values():
                problem(here, f"targetPort {target} is not a container port")
            if ports.get(target, target) != port["port"]:
                problem(here, f"port {port['port']} is not its container port {ports.get(target, target)}")
    headless = objects.get(("Service", headless_name))
    if headless is None:
        problem("deploy/k8s", f"no Service {headless_name} (HERMOD_DISCOVERY)")
    elif headless["spec"].get("clusterIP") != "None" or not headless["spec"].get("publishNotReadyAddresses"):
        problem("deploy/k8s", f"{headless_name} must be headless with publishNotReadyAddresses: true")


def main():
    if not SETTINGS or not ROUTES:
        sys.exit("check_config: could not read the settings or the admin routes from broker/src")
    check_help(SETTINGS)
    check_compose(check_dockerfile())
    check_kubernetes()
    for line in problems:
        print(f"MISMATCH {line}")
    if problems:
        sys.exit(1)
    print(f"check_config: Dockerfile, docker-compose.yml and k8s/ agree with the broker "
          f"({len(SETTINGS)} settings, ports {GRPC_PORT}/{ADMIN_PORT}, {len(ROUTES)} admin routes)")


main()
