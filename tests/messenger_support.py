"""The messenger example (examples/messenger) running for real: a throwaway PostgreSQL cluster
migrated with Alembic, a `pully serve` consuming its outbox, and the app under uvicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .pg_support import PostgresCluster, postgres_cluster
from .support import ROOT, PullyProcess, free_port, wait_for

APP = ROOT / "examples" / "messenger"
SECRET = "messenger-tests-pully-jwt-secret-0123456789"


def alembic(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(APP)}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def create_database(cluster: PostgresCluster, name: str) -> str:
    import psycopg

    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.dsn.rsplit("/", 1)[0] + f"/{name}"


@dataclass
class Messenger:
    url: str
    pully: PullyProcess
    dsn: str
    nodes: list[PullyProcess] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client (with the user's session token); all closed with the app."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=10)
        self.clients.append(client)
        return client

    def register(self, name: str, password: str = "correct horse") -> tuple[int, httpx.Client]:
        reply = self.client().post("/register", json={"name": name, "password": password})
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        return int(body["id"]), self.client(body["token"])


def push_relationships(node: PullyProcess) -> None:
    """The example's relationships.json (typing:* never stored), as its run command pushes it."""
    pushed = subprocess.run(
        [sys.executable, "-m", "pully_tornado", "relationships", "push",
         str(APP / "relationships.json"), "--url", node.url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr


@contextmanager
def messenger(workdir: Path, redis_url: str | None = None, nodes: int = 1) -> Iterator[Messenger]:
    """The app with `nodes` Pully nodes (on `redis_url` when there are several), all consuming
    the outbox; the page gets every node's URL, the app calls the last one's server API."""
    with postgres_cluster() as cluster:
        dsn = create_database(cluster, "messenger")
        migrated = alembic(dsn, "upgrade", "head")
        assert migrated.returncode == 0, migrated.stderr
        port = free_port()
        pully_env = {"PULLY_OUTBOX_DSN": dsn, "PULLY_JWT_SECRET": SECRET,
                     "PULLY_OUTBOX_POLL_INTERVAL": "0.2",
                     "PULLY_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"}  # fmt: skip
        started = [
            PullyProcess(workdir, redis_url, env=pully_env, name=f"pully{n}").start()
            for n in range(nodes)
        ]  # fmt: skip
        node = started[-1]
        push_relationships(node)
        env = {**os.environ, "DATABASE_URL": dsn, "PULLY_URL": node.url, "PYTHONPATH": str(APP),
               "PULLY_WS_URLS": ",".join(n.ws_url for n in started), "PULLY_JWT_SECRET": SECRET,
               "APP_SECRET": "messenger-tests-app-secret"}  # fmt: skip
        log = open(workdir / "app.log", "wb")  # noqa: SIM115 - closed below
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "messenger.app:create_app",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=APP, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: app_answers(url, app), 20, what=f"the app\n{_tail(workdir)}")
            running = Messenger(url, node, dsn, started)
            yield running
            for client in running.clients:
                client.close()
        finally:
            app.terminate()
            app.wait(10)
            log.close()
            for each in started:
                each.stop()


def app_answers(url: str, app: subprocess.Popen[bytes]) -> bool:
    """The app at ``url`` answers /health (and has not exited)."""
    assert app.poll() is None, "the app exited"
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(workdir: Path) -> str:
    path = workdir / "app.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""
