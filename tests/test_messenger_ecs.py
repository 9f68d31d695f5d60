# ruff: noqa: F811 - a test's fixture argument shadows the fixture imported by name
"""examples/messenger/ecs/task-definition.json: ECS (moto, over real HTTP) takes it as it is once
its placeholders are filled, and its container health check passes against the running app
(and fails against nothing). examples/messenger/Dockerfile, without a Docker engine: hadolint,
and the image's command run from the files it copies, in that layout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .aws_support import Aws, aws, moto_url  # noqa: F401 - fixtures
from .messenger_support import APP, SECRET, Messenger, app_answers, messenger
from .support import free_port, wait_for
from .test_deploy_docker import HADOLINT, exec_form, instructions, one

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


def test_the_dockerfile_passes_hadolint() -> None:
    linted = subprocess.run([str(HADOLINT), str(APP / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_runs_the_task_definitions_command_from_its_own_files(
    app: Messenger, tmp_path: Path
) -> None:
    dockerfile = APP / "Dockerfile"
    steps = instructions(dockerfile)
    workdir = one("WORKDIR", dockerfile)
    root = tmp_path / workdir.lstrip("/")
    root.mkdir(parents=True)
    for word, args in steps:  # what the image holds in its WORKDIR, nothing else
        *sources, dest = args.split()
        if word != "COPY" or dest.startswith("/"):
            continue
        for source in sources:
            target = root / dest / source if dest == "./" else root / dest
            copy = shutil.copytree if (APP / source).is_dir() else shutil.copy
            copy(APP / source, target)
    cmd, health = exec_form("CMD", dockerfile), exec_form("HEALTHCHECK", dockerfile)
    container = json.loads((APP / "ecs" / "task-definition.json").read_text())
    [definition] = container["containerDefinitions"]
    assert cmd == definition["command"]
    assert ["CMD", *health] == definition["healthCheck"]["command"]
    port = free_port()
    argv = [*cmd[:-1], str(port)]
    argv[argv.index("0.0.0.0")] = "127.0.0.1"
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PORT": str(port),
           "DATABASE_URL": app.dsn, "PULLY_URL": app.pully.url, "PULLY_JWT_SECRET": SECRET,
           "APP_SECRET": "image-test-secret"}  # fmt: skip
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: app_answers(url, proc), 20, what=f"the image's command (log: {log})")
        assert subprocess.run([sys.executable, *health[1:]], env={"PORT": str(port)},
                              timeout=10).returncode == 0  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
