"""``examples/messenger/run``: Pully, the messenger app, and, when no ``DATABASE_URL`` is given,
a throwaway PostgreSQL cluster in a temp dir (run as ``nobody`` when started as root); the
migrations applied; the URL printed. Ctrl-C (or SIGTERM) stops all of it."""

from __future__ import annotations

import argparse
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        sys.exit(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found[-1]


def as_postgres_user(*command: str) -> None:
    prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)


def start_postgres(directory: Path) -> tuple[str, Path]:
    """A new cluster in ``directory``; returns its URL and data dir."""
    if os.geteuid() == 0:
        shutil.chown(directory, "nobody")
    data, port = directory / "data", free_port()
    as_postgres_user(pg_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-N")
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    as_postgres_user(pg_bin("pg_ctl"), "-D", str(data), "-l", str(directory / "log"),
                     "-o", options, "-w", "start")  # fmt: skip
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", data


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{what} did not answer at {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the messenger on Pully.")
    parser.add_argument("--port", type=int, default=8000, help="the app's port")
    parser.add_argument("--pully-port", type=int, default=8080, help="Pully's port")
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="messenger-"))
    procs: list[subprocess.Popen[bytes]] = []
    pg_data = None
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        dsn = os.environ.get("DATABASE_URL")
        if not dsn:
            dsn, pg_data = start_postgres(temp)
        env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(HERE)}
        subprocess.run([sys.executable, "-m", "alembic", "-c", str(HERE / "alembic.ini"),
                        "upgrade", "head"], env=env, check=True)  # fmt: skip
        app_url = f"http://127.0.0.1:{args.port}"
        secret = secrets.token_urlsafe(32)
        pully_env = {**os.environ, "PULLY_OUTBOX_DSN": dsn, "PULLY_JWT_SECRET": secret,
                     "PULLY_ALLOWED_ORIGINS": app_url, "PULLY_PORT": str(args.pully_port),
                     "PULLY_HOST": "127.0.0.1"}  # fmt: skip
        # in the temp dir: its relationships.json (embedded mode) is this run's, not yours
        pully = subprocess.Popen([sys.executable, "-m", "pully_tornado", "serve"], env=pully_env,
                                 cwd=temp)  # fmt: skip
        procs.append(pully)
        pully_url = f"http://127.0.0.1:{args.pully_port}"
        wait_http(pully_url + "/healthz", pully, "pully serve")
        # typing:* never stored: the example's channel options, pushed as a deploy would
        push = ["relationships", "push", str(HERE / "relationships.json"), "--url", pully_url]
        subprocess.run([sys.executable, "-m", "pully_tornado", *push], check=True)
        app_env = {**env, "PULLY_URL": pully_url, "PULLY_JWT_SECRET": secret,
                   "PULLY_WS_URLS": f"ws://127.0.0.1:{args.pully_port}/ws",
                   "APP_SECRET": secrets.token_urlsafe(32)}  # fmt: skip
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "messenger.app:create_app",
             "--host", "127.0.0.1", "--port", str(args.port)], env=app_env,
        )  # fmt: skip
        procs.append(app)
        wait_http(app_url + "/health", app, "the messenger app")
        print(f"messenger ready: {app_url}  (Pully: {pully_url}; Ctrl-C stops)", flush=True)
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if pg_data is not None:
            as_postgres_user(pg_bin("pg_ctl"), "-D", str(pg_data), "-m", "fast", "-w", "stop")
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
