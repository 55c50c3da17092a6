"""deploy/ checked offline (no container engine or cluster here; deploy/README.md says so):
the Dockerfile's structure and its CMD and HEALTHCHECK run as the same commands outside a
container against the built-in config; compose.yaml's wiring; the Helm chart rendered (by
``helm`` when installed, else tests/helm_render.py) and its manifests checked against the
Kubernetes schemas (kubernetes-validate) and for what the proxy needs."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from proxy.config import settings_from_dict
from tests.helm_render import render_chart
from tests.procs import ROOT, free_port

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "persona-proxy"


# --------------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instr(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def test_dockerfile_is_non_root_with_healthcheck_and_no_unmounted_config():
    (user,) = instr("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert instr("HEALTHCHECK") and "CMD" in instr("HEALTHCHECK")[0]
    assert instr("EXPOSE") == ["8080"]
    assert instr("WORKDIR")[-1] == "/data"
    # The image must start with the built-in config: nothing points at a file not in it.
    assert not any("PERSONA_PROXY_CONFIG" in env for env in instr("ENV"))
    # Every documented `docker run` that sets PERSONA_PROXY_CONFIG mounts that path.
    docs = (DEPLOY / "Dockerfile").read_text() + (DEPLOY / "README.md").read_text()
    runs = re.findall(r"docker run(?:[^\n]*\\\n)*[^\n]*", docs)
    assert runs
    for run in runs:
        args = shlex.split(run.replace("\\\n", " ").replace("#", " "))
        for _i, a in enumerate(args):
            if a.startswith("PERSONA_PROXY_CONFIG="):
                path = a.split("=", 1)[1]
                mounts = [args[j + 1].split(":")[1] for j, b in enumerate(args) if b == "-v"]
                assert path in mounts, f"{run!r} points at {path} but does not mount it"


def test_dockerfile_extras_build_arg_names_a_real_extra():
    assert any(a.startswith("EXTRAS=") for a in instr("ARG"))
    (run,) = [r for r in instr("RUN") if "pip install" in r]
    assert "${EXTRAS" in run
    documented = re.findall(r"--build-arg EXTRAS=([\w-]+)", (DEPLOY / "Dockerfile").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert documented and all(f"\n{extra} = [" in pyproject for extra in documented)


def _as_here(argv: list[str], port: int) -> list[str]:
    """The image's command, run here: the console script via this interpreter, our port."""
    argv = [str(port) if a == "8080" else a for a in argv]
    if argv[0] == "persona-proxy":
        return [sys.executable, "-m", "proxy", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *[a.replace(":8080/", f":{port}/") for a in argv[1:]]]
    raise AssertionError(f"unexpected command {argv}")


def test_image_cmd_and_healthcheck_work_with_the_built_in_config(tmp_path):
    """The CMD as the image runs it (WORKDIR /data is a scratch directory here, no config
    file, no provider keys): it serves, and the HEALTHCHECK command passes against it."""
    cmd = json.loads(instr("CMD")[0])
    health = json.loads(instr("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PERSONA_PROXY")
        and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
    }
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        _as_here(cmd, port), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert subprocess.run(_as_here(health, port), env=env, timeout=10).returncode == 0
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
        assert (tmp_path / "persona-proxy.db").exists()  # the usage store lands in WORKDIR
        proc.send_signal(signal.SIGTERM)  # STOPSIGNAL
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # And the healthcheck fails when nothing listens.
    assert subprocess.run(_as_here(health, port), env=env, capture_output=True).returncode != 0


# ------------------------------------------------------------------------------------ compose


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_wires_three_replicas_postgres_redis_collector_prometheus():
    spec = compose()
    services = spec["services"]
    proxies = sorted(n for n in services if n.startswith("proxy-"))
    assert proxies == ["proxy-1", "proxy-2", "proxy-3"]
    assert {"postgres", "redis", "otel-collector", "prometheus"} <= set(services)
    for name in proxies:
        svc = services[name]
        assert (DEPLOY / ".." / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        config_in = svc["environment"]["PERSONA_PROXY_CONFIG"]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
        assert config_in in mounts and (DEPLOY / mounts[config_in]).is_file()
        assert int(svc["stop_grace_period"].rstrip("s")) > 25
    for svc in services.values():  # every mounted file exists
        for m in svc.get("volumes", []):
            src = m.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), src
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]

    # The proxy config reaches the other services by their compose names and loads.
    config = yaml.safe_load((DEPLOY / "compose" / "persona-proxy.yaml").read_text())
    settings = settings_from_dict(config, env={}, source="compose")
    assert urlparse(settings.usage.database).hostname == "postgres"
    pg = services["postgres"]["environment"]
    assert urlparse(settings.usage.database).username == pg["POSTGRES_USER"]
    assert urlparse(settings.usage.database).path == "/" + pg["POSTGRES_DB"]
    assert urlparse(config["state"]["redis_url"]).hostname == "redis"
    otlp = urlparse(config["telemetry"]["otlp_endpoint"])
    assert otlp.hostname == "otel-collector" and otlp.port == 4318

    collector = yaml.safe_load((DEPLOY / "compose" / "otel-collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert "otlp" in collector["service"]["pipelines"]["traces"]["receivers"]

    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert sorted(job["static_configs"][0]["targets"]) == [f"{p}:8080" for p in proxies]


# --------------------------------------------------------------------------------------- Helm


def manifests(values: dict | None = None) -> dict[str, dict]:
    if shutil.which("helm") and values is None:
        out = subprocess.run(
            ["helm", "template", "rel", str(CHART)], capture_output=True, text=True, check=True
        ).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
    else:
        docs = render_chart(CHART, values)
    return {d["kind"]: d for d in docs}


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "persona-proxy"
    assert chart["version"] and chart["appVersion"]


def test_chart_renders_valid_kubernetes_manifests():
    docs = manifests()
    assert set(docs) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs.values():
        kv.validate(doc, "1.32.0", strict=True)


def test_chart_deployment_probes_secrets_and_graceful_shutdown():
    docs = manifests()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] in port_names
    assert port_names["http"] == values["config"]["server"]["port"]
    # Keys only by reference to a Secret; no secret value in the chart.
    assert container["envFrom"] == [{"secretRef": {"name": values["existingSecret"]}}]
    # Kubernetes waits longer than the proxy drains.
    server = values["config"]["server"]
    drain = server["shutdown_grace_seconds"] + server["shutdown_delay_seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # Selectors match the pods; the PDB and HPA point at this Deployment.
    labels = pod["metadata"]["labels"]
    for kind in ("Deployment", "PodDisruptionBudget"):
        assert docs[kind]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] in port_names
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        docs["Deployment"]["metadata"]["name"],
    )
    assert "replicas" not in docs["Deployment"]["spec"]  # the HPA owns the count
    # The config the ConfigMap carries is the one the container reads, and it loads.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    config_arg = container["args"][container["args"].index("--config") + 1]
    assert config_arg == mount["mountPath"] + "/persona-proxy.yaml"
    config = yaml.safe_load(docs["ConfigMap"]["data"]["persona-proxy.yaml"])
    env = {"DATABASE_URL": "postgresql://u@db/p", "REDIS_URL": "redis://r:6379/0"}
    settings = settings_from_dict(config, env=env, source="helm")
    assert settings.usage.database == env["DATABASE_URL"]


def test_chart_without_autoscaling_sets_replicas():
    docs = manifests({"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}})
    assert docs["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in docs and "PodDisruptionBudget" not in docs
