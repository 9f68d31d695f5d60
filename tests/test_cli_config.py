# ruff: noqa: F811 - a test's fixture argument shadows the fixture imported by name
"""Configuration of every command: flags over environment over ``pully.toml`` over defaults,
one-line errors naming the culprit, ``--help`` listing everything, and ``pully bench``."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pully_tornado.cli import main

from .aws_support import Aws, Cli, aws, cli, local_cli, moto_url, one_line_error  # noqa: F401 - fixtures

COMMANDS = ["serve", "function", "relationships", "outbox", "deploy", "destroy", "status", "bench"]


def test_help_lists_every_command_and_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.strip()]  # fmt: skip
    assert listed == COMMANDS
    assert "--debug" in result.output and "--config" in result.output
    for group, subs in (("function", ["add", "status", "deploy", "delete"]),
                        ("relationships", ["validate", "push"])):  # fmt: skip
        result = CliRunner().invoke(main, [group, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert [line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
                if line.strip()] == subs  # fmt: skip
    for command in ("deploy", "destroy", "status"):
        result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
        for flag in ("--stack", "--s3-bucket", "--aws-region", "--aws-endpoint-url"):
            assert flag in result.output, (command, flag)
    deploy = CliRunner().invoke(main, ["deploy", "--help"], terminal_width=200).output
    for flag in ("--yes", "--image", "--redis-url", "--vpc", "--subnets", "--min-tasks",
                 "--max-tasks", "--templates"):  # fmt: skip
        assert flag in deploy, flag


def test_names_come_from_pully_toml_then_the_environment_then_flags(cli: Cli, aws: Aws) -> None:
    def stack_asked_about(*args: str) -> str:
        """The stack ``destroy`` would remove (answered no: nothing happens)."""
        result = cli(*args, "destroy", input="n\n")
        assert result.exit_code == 1 and "Aborted" in result.stderr, result.output
        return result.stderr.split("Destroy stack '")[1].split("'")[0]

    cli.env.update(aws.env)
    (cli.cwd / "pully.toml").write_text('stack = "fromtoml"\ns3_bucket = "toml-bucket"\n')
    assert stack_asked_about() == "fromtoml"
    cli.env["PULLY_STACK"] = "fromenv"
    assert stack_asked_about() == "fromenv"
    assert stack_asked_about("--debug") == "fromenv"
    result = cli("destroy", "--stack", "fromflag", input="n\n")
    assert "Destroy stack 'fromflag'" in result.stderr
    other = cli.cwd / "other.toml"
    other.write_text('stack = "other"\ns3_bucket = "toml-bucket"\n')
    del cli.env["PULLY_STACK"]
    assert stack_asked_about("--config", str(other)) == "other"


def test_deploy_settings_from_the_deploy_table(local_cli: Cli, aws: Aws) -> None:
    local_cli.env.update(aws.env, PULLY_REDIS_URL="redis://10.0.0.9:6379/0")
    (local_cli.cwd / "pully.toml").write_text(
        's3_bucket = "toml-bucket"\nstack = "tomlstack"\n\n'
        '[deploy]\nimage = "example/pully:toml"\nmax_tasks = 2\ncpu = 1024\nmemory = 2048\n'
    )
    result = local_cli("deploy", "--yes")
    assert result.exit_code == 0, result.output
    td = aws.client("ecs").describe_task_definition(taskDefinition="tomlstack")["taskDefinition"]
    assert td["containerDefinitions"][0]["image"] == "example/pully:toml"
    assert (td["cpu"], td["memory"]) == ("1024", "2048")
    aas = aws.client("application-autoscaling")
    assert (
        aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"][0]["MaxCapacity"]
        == 2
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("colour = 'blue'\n", "pully: invalid pully.toml: unknown key 'colour'"),
        ("port = 'abc'\n", "pully: invalid pully.toml port: 'abc' must be an integer"),
        ("admin_token = 'x'\n", "pully: invalid pully.toml admin_token: secrets do not belong"),
        ("stack = \n", "pully: invalid pully.toml: not valid TOML"),
        ("[deploy]\nsubnets = 'subnet-1'\n", "pully: invalid pully.toml [deploy] subnets: "),
        ("[deploy]\nflavour = 1\n", "pully: invalid pully.toml [deploy]: unknown key 'flavour'"),
    ],
)
def test_a_bad_pully_toml_is_one_line_and_exit_2(local_cli: Cli, toml: str, message: str) -> None:
    (local_cli.cwd / "pully.toml").write_text(toml)
    one_line_error(local_cli("status"), 2, message)


def test_serve_reads_pully_toml_too(cli: Cli) -> None:
    (cli.cwd / "pully.toml").write_text("port = 'abc'\n")
    one_line_error(cli("serve"), 2, "pully: invalid pully.toml port: 'abc' must be an integer")
    one_line_error(
        cli("--config", "missing.toml", "status"), 2, "pully: invalid --config missing.toml"
    )


def test_bench_runs_the_checkouts_benchmark(cli: Cli) -> None:
    result = cli("bench", "--help")
    assert result.exit_code == 0, result.output
    if cli.mode == "subprocess":  # in process, the child writes to the real stdout
        assert "fanout-1k" in result.stdout and "python -m bench" in result.stdout
    bad = cli("bench", "--no-such-flag")
    assert bad.exit_code == 2
