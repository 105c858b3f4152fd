#!/usr/bin/env python3
"""Static checks of infra/docker-compose.yml, for machines without a Docker engine.

Run by `infra/stack check` and `infra/stack test` (before cargo test) with the stack's
venv Python (PyYAML is pinned in infra/requirements.txt). Checks, without building or
running anything:

* the services the shop needs are all there;
* every service built from infra/docker/Dockerfile names a workspace package and a
  binary of it, and only cargo features that package declares;
* every environment variable given to one of our binaries is one it reads: a clap
  `env = "..."` of its crate (or of shared-events' Kafka settings), or a telemetry
  variable documented in shared-events/src/telemetry.rs; variables the local scripts
  (infra/lib/common.sh) do not know are listed;
* every file or folder mounted or referenced exists (Dockerfile, Prometheus config and
  rules, Grafana provisioning and dashboards, init scripts);
* no host port is published twice; container ports match the services' *_PORT;
* every port is published on 127.0.0.1 only (never on all interfaces, `0.0.0.0` or a
  bare `host:container`), as the README promises;
* no credential has a default: a password, secret, token or key is taken from the
  environment / `infra/.env` as `${NAME:?…}` (required), never `${NAME:-weak}` or a
  literal, and so is the password inside a connection URL;
* Prometheus' compose config scrapes each service at the port it listens on, and the
  Grafana datasource points at the compose Prometheus.

Exit status 0 when everything holds, 1 with one line per problem otherwise.
`compose_check.py --self-test` also proves the checker refuses a copy of the file with
a port published on all interfaces, and one with a default password.
"""

import os
import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - reported, not crashed on
    sys.exit("compose_check: PyYAML missing (infra/stack installs it into the venv)")

INFRA = Path(__file__).resolve().parent
ROOT = INFRA.parent
COMPOSE = INFRA / "docker-compose.yml"
REQUIRED = {"kafka", "mongodb", "postgres", "mailpit", "prometheus", "grafana",
            "kakaopay-sim", "order", "payment", "notifier"}
# Where each binary's configuration lives (clap `env = "..."` attributes).
CONFIG_SOURCES = {
    "order": ["order/src"],
    "payment": ["payment/src"],
    "notifier": ["notifier/src"],
    "kakaopay-sim": ["kakaopay/src/bin"],
}
SHARED_SOURCES = ["shared-events/src/kafka"]
ENV_ATTR = re.compile(r'env\s*=\s*"([A-Z][A-Z0-9_]*)"')

problems = []


def problem(message):
    problems.append(message)


def rust_env_vars(folders):
    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.rs"):
            names.update(ENV_ATTR.findall(path.read_text(encoding="utf-8")))
    return names


def telemetry_env_vars():
    """Variables the shared telemetry reads: backticked names in telemetry.rs's docs."""
    text = (ROOT / "shared-events/src/telemetry.rs").read_text(encoding="utf-8")
    docs = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("//!"))
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)(?:=[^`]*)?`", docs)) | {"RUST_LOG"}


def uses_shared_telemetry(binary):
    mains = {"order": "order/src/main.rs", "payment": "payment/src/main.rs",
             "notifier": "notifier/src/main.rs"}
    main = mains.get(binary)
    return bool(main) and "telemetry::init" in (ROOT / main).read_text(encoding="utf-8")


def local_script_vars():
    text = (INFRA / "lib/common.sh").read_text(encoding="utf-8")
    return set(re.findall(r':\s*"\$\{([A-Z][A-Z0-9_]*):=', text))


def package_manifest(package):
    for manifest in ROOT.glob("*/Cargo.toml"):
        text = manifest.read_text(encoding="utf-8")
        if re.search(rf'^name\s*=\s*"{re.escape(package)}"', text, re.M):
            return manifest, text
    return None, ""


def binaries_of(manifest, text):
    names = set(re.findall(r'\[\[bin\]\][^\[]*?name\s*=\s*"([^"]+)"', text, re.S))
    if (manifest.parent / "src/main.rs").exists():
        names.add(re.search(r'^name\s*=\s*"([^"]+)"', text, re.M).group(1))
    names.update(p.stem for p in (manifest.parent / "src/bin").glob("*.rs"))
    return names


def features_of(text):
    section = re.search(r"^\[features\]\n(.*?)(?:^\[|\Z)", text, re.S | re.M)
    if not section:
        return set()
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section.group(1), re.M))


def host_path(reference):
    """A bind mount's or a build context's host side, relative to infra/."""
    return (INFRA / reference).resolve()


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$")
# `${NAME:-value}` / `${NAME-value}`: a default the shop would silently run with.
DEFAULTED = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?-([^}]*)\}")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]*)@")


def bind_addresses(service):
    """(host address or None, host port, container port) of each published port."""
    binds = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            binds.append((entry.get("host_ip"), str(entry.get("published", "")), str(entry.get("target"))))
            continue
        text = str(entry)
        address = None
        if text.startswith("["):  # [::1]:8081:8081
            address, _, text = text[1:].partition("]:")
            address = f"[{address}]"
        parts = text.split(":")
        if address is None and len(parts) == 3:
            address = parts[0]
        host = parts[-2] if len(parts) >= 2 else None
        binds.append((address, host, parts[-1].split("/")[0]))
    return binds


def check_loopback(name, service):
    for address, host, container in bind_addresses(service):
        if address not in LOOPBACK:
            where = f"on {address}" if address else "on all host interfaces"
            problem(f"{name}: publishes {host or container}->{container} {where}; publish on 127.0.0.1 only")


def check_credentials(name, service):
    for var, value in env_of(service).items():
        if SECRET_NAME.search(var) and "${" not in value:
            problem(f"{name}: {var} is a literal; take it from infra/.env as ${{NAME:?...}}")
        for password in URL_PASSWORD.findall(value):
            if not password.startswith("${"):
                problem(f"{name}: {var} has a literal password in its URL")


def check_defaults(raw_text):
    for var, default in DEFAULTED.findall(raw_text):
        if SECRET_NAME.search(var):
            problem(f"${{{var}}} has the default {default!r}; a credential must be required (${{{var}:?...}})")


def published_ports(service):
    ports = []
    for entry in service.get("ports") or []:
        text = str(entry)
        parts = text.split(":")
        if len(parts) >= 2:
            ports.append((parts[-2], parts[-1].split("/")[0]))
        else:
            ports.append((None, parts[0]))
    return ports


def self_test():
    """The checker passes the real file and refuses two broken copies of it."""
    original = COMPOSE.read_text(encoding="utf-8")
    broken = {
        "a port on all interfaces": original.replace('"127.0.0.1:8081:8081"', '"0.0.0.0:8081:8081"', 1),
        "a port without an address": original.replace('"127.0.0.1:5432:5432"', '"5432:5432"', 1),
        "a default password": original.replace(
            "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in infra/.env}", "${POSTGRES_PASSWORD:-postgres}", 1),
    }
    failures = []
    if check(COMPOSE):
        failures.append("the real compose file is refused")
    for what, text in broken.items():
        if text == original:
            failures.append(f"self-test could not make {what}")
            continue
        copy = INFRA / f".compose-selftest-{os.getpid()}.yml"
        try:
            copy.write_text(text, encoding="utf-8")
            if not check(copy):
                failures.append(f"a compose file with {what} passes")
        finally:
            copy.unlink(missing_ok=True)
    for line in failures:
        print(f"compose_check self-test: {line}", file=sys.stderr)
    if not failures:
        print("compose_check self-test: OK (refuses a 0.0.0.0 publish, a bare publish and a default password)")
    return 1 if failures else 0


def check(path):
    """The problems of the compose file at `path` (nothing printed)."""
    global COMPOSE
    COMPOSE = path
    problems.clear()
    run_checks()
    return list(problems)


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    path = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else COMPOSE
    found = check(path)
    services = yaml.safe_load(path.read_text(encoding="utf-8")).get("services") or {}
    if found:
        for line in found:
            print(f"compose_check: {line}", file=sys.stderr)
        return 1
    extra = f"; not in the local scripts: {', '.join(sorted(NOT_IN_SCRIPTS))}" if NOT_IN_SCRIPTS else ""
    print(f"compose_check: {path.name} OK ({len(services)} services{extra})")
    return 0


NOT_IN_SCRIPTS = set()


def run_checks():
    raw_text = COMPOSE.read_text(encoding="utf-8")
    compose = yaml.safe_load(raw_text)
    services = compose.get("services") or {}
    missing = REQUIRED - set(services)
    if missing:
        problem(f"services missing: {sorted(missing)}")

    shared = rust_env_vars(SHARED_SOURCES)
    telemetry = telemetry_env_vars()
    scripts = local_script_vars()
    not_in_scripts = NOT_IN_SCRIPTS
    not_in_scripts.clear()
    host_ports = {}
    check_defaults(raw_text)

    for name, service in services.items():
        check_loopback(name, service)
        check_credentials(name, service)
        # Build: our Dockerfile, a real package, binary and features.
        build = service.get("build")
        binary = None
        if build:
            context = host_path(build.get("context", "."))
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problem(f"{name}: Dockerfile {dockerfile} does not exist")
            args = build.get("args") or {}
            package, binary = args.get("PACKAGE"), args.get("BIN")
            manifest, text = package_manifest(package or "")
            if not manifest:
                problem(f"{name}: PACKAGE {package!r} is no workspace package")
            else:
                if binary not in binaries_of(manifest, text):
                    problem(f"{name}: package {package} has no binary {binary!r}")
                for feature in filter(None, str(args.get("FEATURES", "")).split(",")):
                    if feature.strip() not in features_of(text):
                        problem(f"{name}: package {package} has no feature {feature!r}")

        # Environment of our binaries: every variable is one the binary reads.
        if binary in CONFIG_SOURCES:
            known = rust_env_vars(CONFIG_SOURCES[binary]) | {"RUST_LOG"}
            if binary != "kakaopay-sim":
                known |= shared
            if uses_shared_telemetry(binary):
                known |= telemetry
            env = env_of(service)
            for var in sorted(env):
                if var not in known:
                    problem(f"{name}: {var} is not read by {binary} (not in its documented configuration)")
                elif var not in scripts:
                    not_in_scripts.add(var)
            # The container port the service listens on is the one it publishes.
            port_vars = [v for v in env if v.endswith("_PORT") and v not in ("SMTP_PORT",)]
            prefix = name.upper().replace("-", "_")
            listened = {env[v] for v in port_vars if v.startswith(prefix)}
            for _, container in published_ports(service):
                if listened and container not in listened:
                    problem(f"{name}: publishes container port {container} but listens on {sorted(listened)}")

        # Files: bind mounts exist.
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                if not host_path(source).exists():
                    problem(f"{name}: mounted {source} does not exist")

        # Host ports: each published once.
        for host, container in published_ports(service):
            if host is None:
                continue
            if host in host_ports:
                problem(f"host port {host} published by both {host_ports[host]} and {name}")
            host_ports[host] = name

    # Prometheus: its config file, rules, and scrape targets.
    prometheus = services.get("prometheus") or {}
    config_arg = next((c for c in prometheus.get("command") or [] if str(c).startswith("--config.file=")), None)
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in prometheus.get("volumes") or [] if ":" in str(v)}
    if not config_arg:
        problem("prometheus: no --config.file")
    else:
        in_container = config_arg.split("=", 1)[1]
        folder, _, file_name = in_container.rpartition("/")
        if folder not in mounts:
            problem(f"prometheus: {folder} is not mounted")
        else:
            config_path = host_path(mounts[folder]) / file_name
            if not config_path.is_file():
                problem(f"prometheus: {config_path} does not exist")
            else:
                config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
                for rules in config.get("rule_files") or []:
                    if not (config_path.parent / rules).is_file():
                        problem(f"prometheus: rule file {rules} does not exist")
                for job in config.get("scrape_configs") or []:
                    for static in job.get("static_configs") or []:
                        for target in static.get("targets") or []:
                            host, _, port = target.rpartition(":")
                            if host not in services:
                                problem(f"prometheus job {job['job_name']}: {host} is no compose service")
                                continue
                            env = env_of(services[host])
                            ports = {v for k, v in env.items() if k.endswith("_PORT") and k.startswith(host.upper())}
                            if ports and port not in ports:
                                problem(f"prometheus job {job['job_name']}: {host} listens on {sorted(ports)}, not {port}")

    # Grafana: provisioning and dashboards mounted, datasource at the compose Prometheus.
    grafana = services.get("grafana") or {}
    grafana_mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in grafana.get("volumes") or []}
    provisioning = grafana_mounts.get("/etc/grafana/provisioning")
    dashboards = grafana_mounts.get("/var/lib/grafana/dashboards")
    if not provisioning or not dashboards:
        problem("grafana: provisioning or dashboards folder not mounted")
    else:
        for datasource_file in (host_path(provisioning) / "datasources").glob("*.yml"):
            for datasource in yaml.safe_load(datasource_file.read_text(encoding="utf-8")).get("datasources") or []:
                url = str(datasource.get("url", ""))
                host = re.sub(r"^https?://", "", url).split(":")[0].split("/")[0]
                if host not in services:
                    problem(f"grafana datasource {datasource.get('name')}: {url} is no compose service")
        for provider_file in (host_path(provisioning) / "dashboards").glob("*.yml"):
            for provider in yaml.safe_load(provider_file.read_text(encoding="utf-8")).get("providers") or []:
                path = (provider.get("options") or {}).get("path")
                if path != "/var/lib/grafana/dashboards":
                    problem(f"grafana provider {provider.get('name')}: path {path} is not the mounted dashboards folder")
        if not list(host_path(dashboards).glob("*.json")):
            problem("grafana: no dashboards to provision")
        home = env_of(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
        if home and not (host_path(dashboards) / Path(home).name).is_file():
            problem(f"grafana: home dashboard {home} does not exist")



if __name__ == "__main__":
    sys.exit(main())
