"""Checks of the deployment files that schemas cannot express (run by scripts/validate_deploy.sh).

    python scripts/deploy_policy.py COMPOSE_CONFIG_JSON K8S_MANIFESTS_YAML

COMPOSE_CONFIG_JSON is the output of ``docker compose config --format json``; K8S_MANIFESTS_YAML the
output of ``kubectl kustomize deploy/k8s`` (or the resource files concatenated). Needs PyYAML.
Prints each violation and exits 1 if there is any.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CONDUIT_SERVICES = ("migrate", "api", "worker", "beat")
PHASE = "conduit-phase"


def check_compose(config: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = config["services"]
    for name in ("api", "worker", "beat"):
        condition = services[name].get("depends_on", {}).get("migrate", {}).get("condition")
        if condition != "service_completed_successfully":
            problems.append(f"compose: {name} must wait for migrate (service_completed_successfully)")
    if services["migrate"].get("command") != ["migrate"] or services["migrate"].get("restart") != "no":
        problems.append("compose: migrate must run `conduit migrate` once (restart: no)")
    for name in CONDUIT_SERVICES:
        service = services[name]
        if not service.get("read_only"):
            problems.append(f"compose: {name} must have a read-only root filesystem")
        env = service.get("environment", {})
        if env.get("CONDUIT_ENV") != "production":
            problems.append(f"compose: {name} must run with CONDUIT_ENV=production")
    api = services["api"]
    if api.get("ports"):
        problems.append("compose: api replicas must not publish ports (only the proxy does)")
    if "container_name" in api:
        problems.append("compose: api cannot have a container_name and still scale")
    subnets = [pool["subnet"] for pool in config["networks"]["proxy"]["ipam"]["config"]]
    trusted = api["environment"].get("CONDUIT_TRUSTED_PROXIES", "")
    if [str(ipaddress.ip_network(item.strip())) for item in trusted.split(",")] != subnets:
        problems.append(f"compose: CONDUIT_TRUSTED_PROXIES ({trusted}) must be the proxy network {subnets}")
    if set(services["proxy"].get("networks", {})) != {"proxy"}:
        problems.append("compose: the proxy must be on the proxy network only")
    if services["beat"].get("deploy", {}).get("replicas") != 1:
        problems.append("compose: beat must have exactly one replica")
    for name in ("api", "postgres", "redis"):
        if not services[name].get("healthcheck", {}).get("test"):
            problems.append(f"compose: {name} needs a healthcheck")
    return problems


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def _check_pod(name: str, pod: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problems.append(f"k8s: {name}: the pod must set runAsNonRoot")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"k8s: {name}: no service account token is needed")
    empty_dirs = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
    for container in pod["containers"]:
        context = container.get("securityContext", {})
        if not context.get("readOnlyRootFilesystem"):
            problems.append(f"k8s: {name}/{container['name']}: readOnlyRootFilesystem must be true")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"k8s: {name}/{container['name']}: allowPrivilegeEscalation must be false")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"k8s: {name}/{container['name']}: must drop ALL capabilities")
        if "limits" not in container.get("resources", {}):
            problems.append(f"k8s: {name}/{container['name']}: needs resource limits")
        mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
        for path in ("/tmp", "/app/var"):
            if mounts.get(path) not in empty_dirs:
                problems.append(f"k8s: {name}/{container['name']}: {path} must be an emptyDir")
    return problems


def check_k8s(resources: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    by_name = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    required = [
        ("Namespace", "conduit"),
        ("ConfigMap", "conduit-config"),
        ("Deployment", "conduit-api"),
        ("Service", "conduit-api"),
        ("Ingress", "conduit"),
        ("HorizontalPodAutoscaler", "conduit-api"),
        ("PodDisruptionBudget", "conduit-api"),
        ("Deployment", "conduit-worker"),
        ("Deployment", "conduit-beat"),
        ("Job", "conduit-migrate"),
    ]
    problems += [f"k8s: {kind} {name} is missing" for kind, name in required if (kind, name) not in by_name]
    if problems:
        return problems
    for (kind, name), resource in by_name.items():
        if kind in ("Deployment", "Job"):
            problems += _check_pod(name, _pod_spec(resource))

    api = by_name["Deployment", "conduit-api"]
    if "replicas" in api["spec"]:
        problems.append("k8s: conduit-api must leave `replicas` to the HorizontalPodAutoscaler")
    if api["spec"]["strategy"]["rollingUpdate"].get("maxUnavailable") != 0:
        problems.append("k8s: conduit-api rollouts must keep every pod until its successor is ready")
    pod = _pod_spec(api)
    container = pod["containers"][0]
    probes = {
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health/live",
    }
    for probe, path in probes.items():
        if container.get(probe, {}).get("httpGet", {}).get("path") != path:
            problems.append(f"k8s: conduit-api {probe} must GET {path}")
    allowed = by_name["ConfigMap", "conduit-config"]["data"].get("CONDUIT_ALLOWED_HOSTS", "*")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        headers = container.get(probe, {}).get("httpGet", {}).get("httpHeaders", [])
        host = next((h["value"] for h in headers if h["name"] == "Host"), None)
        if allowed != "*" and host not in allowed.split(","):
            problems.append(f"k8s: conduit-api {probe} Host header {host!r} is not in {allowed!r}")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if pre_stop[:1] != ["sleep"]:
        problems.append("k8s: conduit-api needs a preStop sleep")
    elif pod.get("terminationGracePeriodSeconds", 30) <= int(pre_stop[1]) + 15:
        problems.append("k8s: conduit-api terminationGracePeriodSeconds must cover preStop plus draining")

    hpa = by_name["HorizontalPodAutoscaler", "conduit-api"]
    if hpa["apiVersion"] != "autoscaling/v2" or hpa["spec"]["scaleTargetRef"]["name"] != "conduit-api":
        problems.append("k8s: the HorizontalPodAutoscaler must be autoscaling/v2 on conduit-api")
    beat = by_name["Deployment", "conduit-beat"]
    if beat["spec"].get("replicas") != 1 or beat["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append("k8s: conduit-beat must have one replica and the Recreate strategy")
    job = _pod_spec(by_name["Job", "conduit-migrate"])["containers"][0]
    if job.get("args") != ["migrate"]:
        problems.append("k8s: the migration Job must run `conduit migrate`")
    # The release order: what the Job needs, and the Job, are applied first (conduit-phase=pre-deploy).
    pre_deploy = {
        key for key, r in by_name.items() if r["metadata"].get("labels", {}).get(PHASE) == "pre-deploy"
    }
    for key in [("Namespace", "conduit"), ("ConfigMap", "conduit-config"), ("Job", "conduit-migrate")]:
        if key not in pre_deploy:
            problems.append(f"k8s: {key[0]} {key[1]} must be labelled {PHASE}=pre-deploy")
    problems += [
        f"k8s: {kind} {name} must not be pre-deploy" for kind, name in pre_deploy if kind == "Deployment"
    ]
    for resource in resources:
        if resource["kind"] == "Secret":
            problems.append("k8s: no Secret belongs in the kustomization (see secret.example.yaml)")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    compose = json.loads(Path(argv[1]).read_text())
    resources = [doc for doc in yaml.safe_load_all(Path(argv[2]).read_text()) if doc]
    problems = check_compose(compose) + check_k8s(resources)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        count = len(compose["services"])
        print(f"policy: compose ({count} services) and {len(resources)} Kubernetes resources ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
