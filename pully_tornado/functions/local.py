"""The ``local`` runtime: ``PULLY_FUNCTIONS_DIR/<name>/handler.py`` in worker processes.

A pool of ``PULLY_FUNCTION_WORKERS`` subprocesses, each running one call at a time, so a crash,
an endless loop or a blocking call in a function cannot stall the node. A call that overruns its
timeout gets its worker killed and replaced; a worker that dies is replaced too. The event loop
only ever writes a line and awaits a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import orjson

from ..relationships import FunctionSpec
from ..settings import Settings
from .base import FunctionError, Runtime

logger = logging.getLogger("pully.functions.local")

LINE_LIMIT = 64 * 1024 * 1024  # a reply line (results are bounded by the message size anyway)


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class LocalRuntime(Runtime):
    kind = "local"

    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.functions_dir)
        self.size = settings.function_workers
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._started = False
        self._closed = False
        self._replacing: set[asyncio.Task[None]] = set()

    def _replace_later(self, worker: _Worker) -> None:
        task = asyncio.ensure_future(self._replace(worker))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pully_tornado.functions.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT,
        )  # fmt: skip
        worker = _Worker(proc)
        self._workers.add(worker)
        self._idle.put_nowait(worker)

    async def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.discard(worker)
        with contextlib.suppress(ProcessLookupError):
            await worker.proc.wait()
        if not self._closed:
            await self._spawn()

    async def call(self, name: str, spec: FunctionSpec, event: dict[str, Any]) -> Any:
        path = (self.root / name / "handler.py").resolve()
        if not path.is_file():
            raise FunctionError(f"no {self.root / name / 'handler.py'}")
        if not self._started:
            self._started = True
            for _ in range(self.size):
                await self._spawn()
        request = orjson.dumps(
            {"path": str(path), "name": name, "event": event, "timeout": spec.timeout}
        ) + b"\n"  # fmt: skip
        try:
            async with asyncio.timeout(spec.timeout):
                worker = await self._idle.get()  # waiting for a free worker counts too
                try:
                    worker.stdin.write(request)
                    await worker.stdin.drain()
                    line = await worker.stdout.readline()
                except BaseException:
                    self._replace_later(worker)
                    raise
        except TimeoutError:
            raise FunctionError(f"timed out after {spec.timeout:g}s") from None
        except (OSError, ValueError) as exc:
            raise FunctionError(f"worker failed: {exc}") from None
        if not line:
            code = await worker.proc.wait()
            self._replace_later(worker)
            raise FunctionError(f"worker crashed (exit code {code})")
        self._idle.put_nowait(worker)
        reply = orjson.loads(line)
        if not reply["ok"]:
            raise FunctionError(f"raised {reply['error']}")
        return reply["result"]

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*self._replacing, return_exceptions=True)
        for worker in list(self._workers):
            worker.kill()
            with contextlib.suppress(ProcessLookupError):
                await worker.proc.wait()
        self._workers.clear()
