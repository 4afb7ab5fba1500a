"""The deployment files, checked without a Docker engine: the Dockerfile passes hadolint, the
compose file validates against the Compose specification's schema (the one check-jsonschema
ships), and both say what the README promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install the test extras (pip install -e '.[test]')")
    return path


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_follows_the_compose_spec():
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_runs_bot_worker_redis_and_postgres_from_one_dockerfile():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"bot", "worker", "redis", "postgres"}
    assert all(s["restart"] == "unless-stopped" for s in services.values())
    stages = {
        line.split()[-1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM")
    }
    assert services["bot"]["build"]["target"] == "bot" and services["worker"]["build"]["target"] == "worker"
    assert {"bot", "worker"} <= stages
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert any(v.endswith(":/models") for v in services["worker"]["volumes"])  # the model cache
    for name in ("bot", "worker"):
        assert services[name]["env_file"] == ".env"
        assert services[name]["environment"]["LMD_QUEUE__BACKEND"] == "redis"
    # Secrets only by reference to .env.
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD" in text and "TOKEN=" not in text and "API_KEY" not in text


def test_env_file_is_ignored_and_its_example_names_every_secret():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    example = (ROOT / ".env.example").read_text()
    for key in ("LMD_DISCORD__TOKEN", "LMD_PLANNER__API_KEY", "POSTGRES_PASSWORD"):
        assert f"\n{key}=\n" in example, key
