"""Run a channel's functions, in order, on one publish, before the broker sees it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import BadRequest, FunctionFailed
from ..relationships import FunctionSpec, Relationships
from ..settings import Settings
from .base import FunctionError, Runtime, check_result

logger = logging.getLogger("pully.functions")


class Pipeline:
    """Owns one runtime per kind (created when first needed) and runs pipelines.

    A publish captures the relationships document once, so it runs the old pipeline or the new
    one, never a mix. ``on_error: reject`` (the default) fails the publish with
    ``function_failed``; ``on_error: pass`` hands the message on unchanged to the next step.
    Nothing is published until every step is done: never half a pipeline."""

    def __init__(
        self, settings: Settings, on_call: Callable[[str, str, float], None] | None = None
    ) -> None:
        """``on_call(function, outcome, seconds)`` is told about every call (metrics)."""
        self.settings = settings
        self.on_call = on_call
        self._runtimes: dict[str, Runtime] = {}
        self.calls = 0
        self.failures = 0

    def runtime(self, kind: str) -> Runtime:
        runtime = self._runtimes.get(kind)
        if runtime is None:
            runtime = self._runtimes[kind] = _create(kind, self.settings)
        return runtime

    async def close(self) -> None:
        for runtime in self._runtimes.values():
            await runtime.close()
        self._runtimes.clear()

    async def run(
        self, relationships: Relationships, channel: str, data: bytes, client: str | None
    ) -> bytes | None:
        """The JSON payload to publish, or None when a function dropped the message.
        Raises :class:`FunctionFailed` naming the function that failed under ``reject``."""
        names = relationships.pipeline_for(channel)
        if not names:
            return data  # no functions: the bytes pass through untouched
        value: Any = orjson.loads(data)
        for name in names:
            spec = relationships.spec(name)
            kind = spec.runtime or self.settings.functions_runtime
            event = {"channel": channel, "data": value, "client": client}
            started = time.perf_counter()
            self.calls += 1
            try:
                result = check_result(await self._call(kind, name, spec, event))
            except FunctionError as exc:
                self.failures += 1
                if self.on_call is not None:
                    self.on_call(name, "failed", time.perf_counter() - started)
                elapsed = (time.perf_counter() - started) * 1000
                if spec.on_error == "pass":
                    logger.warning(
                        "function %s on %s failed (%s) after %.1f ms; passing the "
                        "message on unchanged",
                        name,
                        channel,
                        exc.reason,
                        elapsed,
                    )
                    continue
                logger.warning("function %s on %s failed after %.1f ms: %s", name, channel,
                               elapsed, exc.reason)  # fmt: skip
                raise FunctionFailed(f"function {name!r} failed: {exc.reason}") from None
            if self.on_call is not None:
                outcome = "dropped" if result is None else "ok"
                self.on_call(name, outcome, time.perf_counter() - started)
            if result is None:
                return None
            value = result
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise BadRequest(f"the functions' result cannot be encoded: {exc}") from None

    async def _call(self, kind: str, name: str, spec: FunctionSpec, event: dict[str, Any]) -> Any:
        try:
            return await self.runtime(kind).call(name, spec, event)
        except FunctionError:
            raise
        except Exception as exc:  # a runtime bug must fail the call, not the node
            logger.exception("runtime %s failed on function %s", kind, name)
            raise FunctionError(f"runtime error: {type(exc).__name__}: {exc}") from None


def _create(kind: str, settings: Settings) -> Runtime:
    if kind == "local":
        from .local import LocalRuntime

        return LocalRuntime(settings)
    if kind == "lambda":
        from .aws_lambda import LambdaRuntime

        return LambdaRuntime(settings)
    from .http import HttpRuntime

    return HttpRuntime()
