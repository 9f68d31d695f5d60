"""A local-function worker process: ``python -m pully_tornado.functions.worker``.

Reads one JSON request per line on stdin (``{"path", "name", "event", "timeout"}``), runs
``handler(event, context)`` from that file and writes one JSON reply per line on stdout:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. The module is imported
again whenever the file changes. Whatever the function prints goes to stderr (the node's log),
never into the reply stream. The node kills and replaces a worker that overruns its timeout.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

Handler = Callable[[Any, Any], Any]


class Context:
    """The subset of AWS Lambda's context object a function can rely on in both places."""

    def __init__(self, name: str, timeout: float) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"local:{name}"
        self.memory_limit_in_mb = 0
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _load(path: Path, stamp: tuple[int, int]) -> Handler:
    name = f"pully_function_{path.parent.name.replace('-', '_')}_{stamp[0]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # like Lambda: the function's folder is importable
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    handler = getattr(module, "handler", None)
    if not callable(handler):
        raise AttributeError(f"{path} has no handler(event, context) function")
    return handler  # type: ignore[no-any-return]


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    cache: dict[Path, tuple[tuple[int, int], Handler]] = {}
    for line in requests:
        try:
            request = orjson.loads(line)
            path = Path(request["path"])
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            cached = cache.get(path)
            if cached is None or cached[0] != stamp:
                cache[path] = (stamp, _load(path, stamp))
            handler = cache[path][1]
            result = handler(request["event"], Context(request["name"], request["timeout"]))
            try:
                reply = orjson.dumps({"ok": True, "result": result})
            except TypeError as exc:
                reply = orjson.dumps(
                    {"ok": False, "error": f"returned a value that is not JSON: {exc}"}
                )
        except (Exception, SystemExit) as exc:  # the function's failure, reported, not fatal
            reply = orjson.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        replies.write(reply + b"\n")
        replies.flush()


def main() -> None:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # print() in a function must not corrupt the reply stream
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
