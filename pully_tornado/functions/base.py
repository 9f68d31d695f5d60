"""The runtime interface: run one function on one event.

A function is ``handler(event, context)`` with ``event = {"channel", "data", "client"}``. It
returns ``{"data": ...}`` (the payload to pass on) or ``None`` (drop the message). The same file
runs locally (``functions/NAME/handler.py``), on AWS Lambda, or behind an HTTP endpoint.
"""

from __future__ import annotations

import abc
from typing import Any

from ..relationships import FunctionSpec


class FunctionError(Exception):
    """The call failed: raised, timed out, crashed, or returned something that is neither
    ``None`` nor a dict with ``data``. ``reason`` says which, for the client and the logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Runtime(abc.ABC):
    """Runs functions of one kind. Never blocks the event loop; never raises anything but
    :class:`FunctionError` for a failed call."""

    kind: str

    @abc.abstractmethod
    async def call(self, name: str, spec: FunctionSpec, event: dict[str, Any]) -> Any:
        """The function's raw result (checked by the pipeline), within ``spec.timeout``."""

    async def close(self) -> None:  # noqa: B027 - most runtimes hold nothing
        """Release workers and connections."""


def check_result(result: Any) -> Any | None:
    """The next payload, or None for a drop; raises FunctionError for anything else."""
    if result is None:
        return None
    if isinstance(result, dict) and "data" in result:
        return result["data"]
    shown = repr(result)[:80]
    raise FunctionError(f"returned {shown}, expected None or a dict with 'data'")
