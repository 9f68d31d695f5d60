# ruff: noqa: F811 - a test's fixture argument shadows the fixture imported by name
"""docs/deploy.md and docs/cli.md cannot drift: the moto walkthrough runs as written (against
the test's moto server), and every command and template is documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pully_tornado.cli import main
from pully_tornado.deploy.templates import FILES

from .aws_support import Aws, aws, moto_url  # noqa: F401 - fixtures
from .support import ROOT

DEPLOY = (ROOT / "docs" / "deploy.md").read_text()
CLI = (ROOT / "docs" / "cli.md").read_text()
MARKER = "<!-- moto-walkthrough"


def walkthrough() -> str:
    after = DEPLOY[DEPLOY.index(MARKER) :]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "no sh block after the walkthrough marker"
    return match.group(1)


def test_the_moto_walkthrough_runs_as_written(aws: Aws, tmp_path: Path) -> None:
    script = walkthrough().replace("http://127.0.0.1:5000", aws.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULLY_", "AWS_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", COLUMNS="200",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)  # fmt: skip
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Deployed stack 'demo': 17 created." in out
    assert "Nothing changed: stack 'demo' is up to date (17 unchanged)." in out
    assert "Deployed: 1 created, 0 updated, 0 unchanged." in out
    assert re.search(r"upper\s+pully-upper\s+Create", out)
    assert re.search(r"upper\s+pully-upper\s+No Change", out)
    assert "0/1 running" in out and "moto starts no task" in out
    assert "Destroyed stack 'demo': 18 deleted." in out


def test_every_command_and_template_is_documented() -> None:
    for command, sub in (("function", ["add", "status", "deploy", "delete"]),
                         ("relationships", ["validate", "push"])):  # fmt: skip
        for name in sub:
            assert f"`pully {command} {name}" in CLI, (command, name)
    for name in ("serve", "deploy", "destroy", "status", "bench"):
        assert f"`pully {name}" in CLI, name
    for flag in ("--image", "--redis-url", "--vpc", "--subnets", "--min-tasks", "--max-tasks",
                 "--templates", "--yes", "--certificate-arn"):  # fmt: skip
        assert flag in CLI and flag in CliRunner().invoke(main, ["deploy", "--help"]).output
    for name in FILES:
        assert f"ecs/{name}" in DEPLOY, name
