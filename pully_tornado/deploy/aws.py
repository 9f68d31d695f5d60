"""AWS access for the CLI: one boto3 session, every client pointed at ``PULLY_AWS_ENDPOINT_URL``
when it is set (a local moto server, LocalStack...), and AWS's errors turned into one line.

Nothing here runs on a node's event loop: the CLI calls AWS synchronously.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config

from ..settings import Settings
from .errors import DeployError

T = TypeVar("T")
STACK_TAG = "pully:stack"
__all__ = ["STACK_TAG", "Aws", "DeployError", "absent_ok", "describe_error", "paginate"]


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing(exc: botocore.exceptions.ClientError, *codes: str) -> bool:
    """True when ``exc`` says the resource does not exist (the codes vary by service)."""
    missing = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchEntity",
               "ResourceNotFoundException", "ParameterNotFound", *codes}  # fmt: skip
    return error_code(exc) in missing


def describe_error(exc: BaseException) -> str | None:
    """One line for an AWS failure, or None when ``exc`` is not one."""
    if isinstance(exc, botocore.exceptions.ClientError):
        op = getattr(exc, "operation_name", "") or "call"
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        return f"AWS {op} failed: {error_code(exc)}: {message}"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"cannot reach AWS at {exc.kwargs.get('endpoint_url', '?')}: is the endpoint up?"
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return f"AWS rejected the request before sending it: {' '.join(str(exc).split())}"
    if isinstance(exc, botocore.exceptions.WaiterError):
        return f"AWS did not reach the expected state: {exc}"
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return f"AWS call failed: {exc}"
    return None


@dataclass
class Aws:
    """Clients for one region (and endpoint), created once each."""

    region: str
    endpoint_url: str | None = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Aws:
        return cls(region=settings.aws_region, endpoint_url=settings.aws_endpoint_url)

    @functools.cached_property
    def _session(self) -> boto3.session.Session:
        core = botocore.session.get_session()
        core.register_component("data_loader", _loader())
        return boto3.session.Session(region_name=self.region, botocore_session=core)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            config = Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},  # the SDKs' default
                s3={"addressing_style": "path"} if self.endpoint_url else None,
            )
            self._clients[service] = self._session.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def lambda_(self) -> Any:
        return self.client("lambda")

    def account_id(self) -> str:
        return str(self.client("sts").get_caller_identity()["Account"])


@functools.cache
def _loader() -> botocore.loaders.Loader:
    """One loader for every session of the process: it caches the parsed service models
    (megabytes of JSON for EC2), which are the same for everyone."""
    return botocore.loaders.create_loader()


def paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Iterable[Any]:
    """Every item under ``key`` across the pages of ``operation``."""
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def absent_ok(
    call: Callable[..., T], /, *, missing: tuple[str, ...] = (), **kwargs: Any
) -> T | None:
    """``call(**kwargs)``, or None when AWS answers that the resource does not exist (also
    when it answers one of the ``missing`` error codes)."""
    try:
        return call(**kwargs)
    except botocore.exceptions.ClientError as exc:
        if is_missing(exc, *missing):
            return None
        raise


def retry_while(codes: set[str], call: Any, timeout: float, delay: float = 5.0) -> Any:
    """``call()``, retried while AWS answers one of ``codes`` (a dependency still being
    released), for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in codes or time.monotonic() > deadline:
                raise
        time.sleep(delay)
