# ruff: noqa: F811 - a test's fixture argument shadows the fixture imported by name
"""examples/messenger/ecs/task-definition.json: ECS (moto, over real HTTP) takes it as it is once
its placeholders are filled, and its container health check passes against the running app
(and fails against nothing)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .aws_support import Aws, aws, moto_url  # noqa: F401 - fixtures
from .messenger_support import APP, Messenger, messenger
from .support import free_port

pytestmark = pytest.mark.slow
TEMPLATE = APP / "ecs" / "task-definition.json"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Messenger]:
    with messenger(tmp_path_factory.mktemp("messenger-ecs")) as running:
        yield running


def filled() -> dict[str, object]:
    text = TEMPLATE.read_text()
    values = {"CPU": "256", "MEMORY": "512", "REGION": "us-east-1"}
    text = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m[1], f"arn:aws:x:us-east-1:1:{m[1]}"), text)
    doc: dict[str, object] = json.loads(text)
    doc.pop("_comment")
    return doc


def test_ecs_registers_the_task_definition(aws: Aws) -> None:
    doc = filled()
    doc["family"] = "messenger"
    registered = aws.client("ecs").register_task_definition(**doc)["taskDefinition"]
    (container,) = registered["containerDefinitions"]
    assert container["command"][:3] == ["uvicorn", "--factory", "messenger.app:create_app"]
    secrets = {s["name"] for s in container["secrets"]}
    assert secrets == {"DATABASE_URL", "APP_SECRET", "PULLY_JWT_SECRET", "PULLY_ADMIN_TOKEN"}
    assert not re.search(r"\$\{", json.dumps(registered))


def test_the_container_health_check_probes_the_app(app: Messenger) -> None:
    doc = json.loads(TEMPLATE.read_text())
    command = doc["containerDefinitions"][0]["healthCheck"]["command"]
    assert command[:2] == ["CMD", "python"]
    argv = [sys.executable, *command[2:]]
    port = app.url.rsplit(":", 1)[1]
    assert subprocess.run(argv, env={"PORT": port}, timeout=10).returncode == 0
    nothing = subprocess.run(argv, env={"PORT": str(free_port())}, capture_output=True, timeout=10)
    assert nothing.returncode != 0
