"""Real parts for the CLI and deploy tests: one moto server (AWS over real HTTP on 127.0.0.1)
for the session, emptied before each test, and a way to run ``pully`` both through click's
runner (in process) and as a subprocess, with the same environment.

A test module imports the fixtures it uses by name (``from .aws_support import aws, cli,
moto_url  # noqa: F401``) under a file-level ``# ruff: noqa: F811``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto.server import ThreadedMotoServer

from pully_tornado.cli import main

PULLY = str(Path(sys.executable).with_name("pully"))
REGION = "eu-west-1"
BUCKET = "pully-test-bucket"
LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}  # fmt: skip


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Aws:
    """The moto server as one AWS account: boto3 clients and the environment for ``pully``."""

    url: str
    region: str = REGION
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "PULLY_AWS_ENDPOINT_URL": self.url,
        }

    def client(self, service: str) -> Any:
        if service not in self._clients:
            session = boto3.session.Session(
                aws_access_key_id="testing", aws_secret_access_key="testing",
                region_name=self.region,
            )  # fmt: skip
            self._clients[service] = session.client(service, endpoint_url=self.url)
        return self._clients[service]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def lambda_role(self, name: str = "pully-lambda") -> str:
        """An IAM role Lambda can assume (moto checks that it exists)."""
        return str(
            self.client("iam").create_role(
                RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST)
            )["Role"]["Arn"]
        )


@pytest.fixture
def aws(moto_url: str) -> Aws:
    """An empty AWS account for this test."""
    account = Aws(moto_url)
    account.reset()
    return account


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Cli:
    """Runs ``pully ARGS`` in ``cwd`` with exactly ``env`` (plus PATH), either through click's
    runner (``mode="runner"``) or as a real subprocess (``mode="subprocess"``)."""

    mode: str
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def full_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("PULLY_", "AWS_")) and k != "COLUMNS"}  # fmt: skip
        return {**keep, "COLUMNS": "200", **self.env, **(extra or {})}

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Outcome:
        full = self.full_env(env)
        if self.mode == "subprocess":
            proc = subprocess.run(
                [PULLY, *args], cwd=self.cwd, env=full, input=input or "",
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            return Outcome(proc.returncode, proc.stdout, proc.stderr)
        # in process: the same environment, variables absent here removed for the run
        overrides: dict[str, str | None] = {k: None for k in os.environ if k not in full}
        overrides.update(full)
        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            result = CliRunner().invoke(main, list(args), input=input, env=overrides)
        finally:
            os.chdir(old)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr)


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    return project


@pytest.fixture(params=["runner", "subprocess"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """``pully`` in a fresh project folder, through click's runner and as a subprocess: the
    main flow of every command runs both ways."""
    return Cli(str(request.param), _project(tmp_path))


@pytest.fixture
def local_cli(tmp_path: Path) -> Cli:
    """``pully`` through click's runner only: edge cases, where a second process per call
    would only add startup time."""
    return Cli("runner", _project(tmp_path))


@pytest.fixture
def sub_cli(tmp_path: Path) -> Cli:
    """``pully`` as a subprocess only: what only a real process shows (tracebacks, exit)."""
    return Cli("subprocess", _project(tmp_path))


def one_line_error(outcome: Outcome, code: int, startswith: str) -> None:
    """The CLI failed as promised: exit ``code``, one line on stderr, no traceback."""
    assert outcome.exit_code == code, outcome
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith(startswith), lines[0]
    assert "Traceback" not in outcome.output
