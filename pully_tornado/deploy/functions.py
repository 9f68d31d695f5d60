"""Pully functions on AWS Lambda: what differs between ``functions/`` and Lambda, deploying the
difference, and deleting one function everywhere.

A function ``NAME`` is the folder ``PULLY_FUNCTIONS_DIR/NAME`` (``handler.py`` exposing
``handler(event, context)`` plus any other file), zipped deterministically
(:mod:`.package`), uploaded to ``s3://PULLY_S3_BUCKET/functions/NAME.zip`` and run by the Lambda
function ``PULLY_LAMBDA_PREFIX + NAME`` (runtime :data:`RUNTIME`, handler ``handler.handler``).
Local and deployed code are compared by the zip's SHA-256 against Lambda's ``CodeSha256``.
"""

from __future__ import annotations

import enum
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions

from .aws import STACK_TAG, Aws, DeployError, absent_ok, error_code, paginate
from .base import Change, Row, Step
from .errors import NO_BUCKET
from .names import NAME as _NAME
from .names import check_name
from .package import Package, build
from .storage import ensure_bucket

RUNTIME = "python3.12"
HANDLER = "handler.handler"
TIMEOUT = 30  # seconds: Lambda's own limit; a channel's `timeout` in relationships is the real one
FUNCTION_TAG = "pully:function"

Progress = Callable[[str, str], None]  # (function name, what is happening)


class State(enum.StrEnum):
    CREATE = "Create"
    UPDATE = "Update"
    NO_CHANGE = "No Change"
    DELETED_LOCALLY = "Deleted locally"


@dataclass(frozen=True)
class FunctionStatus:
    name: str
    lambda_name: str
    state: State
    local_sha: str | None
    deployed_sha: str | None


@dataclass(frozen=True)
class Deployed:
    name: str
    lambda_name: str
    action: str  # created | updated | unchanged
    sha256: str


class Functions:
    """The functions of one project (``folder``) against one Lambda prefix."""

    def __init__(
        self,
        aws: Aws,
        folder: Path,
        prefix: str,
        bucket: str | None = None,
        role: str | None = None,
        stack: str = "pully",
    ) -> None:
        self.aws = aws
        self.folder = folder
        self.prefix = prefix
        self.bucket = bucket
        self.role = role
        self.stack = stack

    def lambda_name(self, name: str) -> str:
        full = self.prefix + name
        if len(full) > 64:
            raise DeployError(f"Lambda name {full!r} is longer than 64 chars: shorten the name")
        return full

    def s3_key(self, name: str) -> str:
        return f"functions/{name}.zip"

    def local(self) -> list[str]:
        """Names of the folders under ``folder`` with a ``handler.py``, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p.name
            for p in self.folder.iterdir()
            if _NAME.match(p.name) and (p / "handler.py").is_file()
        )

    def package(self, name: str) -> Package:
        folder = self.folder / name
        if not (folder / "handler.py").is_file():
            raise DeployError(
                f"no function {name!r}: {folder / 'handler.py'} does not exist "
                f"(create it with `pully function add {name}`)"
            )
        return build(name, folder)

    def deployed(self) -> dict[str, dict[str, Any]]:
        """Function name -> Lambda configuration, for every Lambda function under the prefix."""
        out = {}
        for config in paginate(self.aws.lambda_, "list_functions", "Functions"):
            full = str(config["FunctionName"])
            name = full[len(self.prefix) :]
            if full.startswith(self.prefix) and _NAME.match(name):
                out[name] = config
        return out

    def status(self) -> list[FunctionStatus]:
        """Every function, local or deployed, with what ``deploy`` would do to it."""
        deployed = self.deployed()
        local = {name: self.package(name).sha256 for name in self.local()}
        rows = []
        for name in sorted(local.keys() | deployed.keys()):
            local_sha = local.get(name)
            remote_sha = deployed[name]["CodeSha256"] if name in deployed else None
            if local_sha is None:
                state = State.DELETED_LOCALLY
            elif remote_sha is None:
                state = State.CREATE
            elif remote_sha != local_sha or not self._config_matches(deployed[name]):
                state = State.UPDATE
            else:
                state = State.NO_CHANGE
            rows.append(FunctionStatus(name, self.prefix + name, state, local_sha, remote_sha))
        return rows

    def _wanted_config(self) -> dict[str, Any]:
        return {"Runtime": RUNTIME, "Handler": HANDLER, "Role": self.role, "Timeout": TIMEOUT}

    def _config_matches(self, config: dict[str, Any]) -> bool:
        wanted = self._wanted_config()
        if self.role is None:
            wanted.pop("Role")
        return all(config.get(k) == v for k, v in wanted.items())

    def deploy(self, names: list[str], progress: Progress) -> Iterator[Deployed]:
        """Create or update each function whose code or configuration differs; leave the rest.
        Yields each result as it is done. Raises :class:`DeployError`, before changing
        anything, for an unknown function or missing bucket/role settings."""
        self._check_deployable()
        packages = [self.package(check_name(n)) for n in names]
        return self._deploy(packages, progress)

    def _check_deployable(self) -> None:
        if not self.bucket:
            raise DeployError(NO_BUCKET)
        if not self.role:
            raise DeployError(
                "PULLY_LAMBDA_ROLE is not set: pass --lambda-role ARN (an IAM role Lambda can "
                "assume) or set lambda_role in pully.toml"
            )

    def _deploy(self, packages: list[Package], progress: Progress) -> Iterator[Deployed]:
        bucket = self.bucket
        assert bucket is not None  # _check_deployable
        current = self.deployed()
        bucket_ready = False
        for pkg in packages:
            full = self.lambda_name(pkg.name)
            config = current.get(pkg.name)
            if (
                config is not None
                and config["CodeSha256"] == pkg.sha256
                and self._config_matches(config)
            ):
                progress(pkg.name, "unchanged")
                yield Deployed(pkg.name, full, "unchanged", pkg.sha256)
                continue
            if not bucket_ready:
                ensure_bucket(self.aws, bucket, self.stack)
                bucket_ready = True
            progress(pkg.name, f"uploading s3://{self.bucket}/{self.s3_key(pkg.name)}")
            self.aws.s3.put_object(
                Bucket=self.bucket,
                Key=self.s3_key(pkg.name),
                Body=pkg.data,
                ContentType="application/zip",
                Metadata={"sha256": pkg.sha256},
            )
            code = {"S3Bucket": bucket, "S3Key": self.s3_key(pkg.name)}
            if config is None:
                progress(pkg.name, f"creating {full}")
                self._create(pkg.name, full, code)
                action = "created"
            else:
                progress(pkg.name, f"updating {full}")
                self._update(full, config, pkg, code)
                action = "updated"
            yield Deployed(pkg.name, full, action, pkg.sha256)

    def _create(self, name: str, full: str, code: dict[str, str]) -> None:
        lam = self.aws.lambda_
        lam.create_function(
            FunctionName=full,
            Code=code,
            Description=f"Pully function {name}",
            Tags={STACK_TAG: self.stack, FUNCTION_TAG: name},
            **self._wanted_config(),
        )
        lam.get_waiter("function_active_v2").wait(
            FunctionName=full, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
        )

    def _update(
        self, full: str, config: dict[str, Any], pkg: Package, code: dict[str, str]
    ) -> None:
        lam = self.aws.lambda_
        wait = {"FunctionName": full, "WaiterConfig": {"Delay": 2, "MaxAttempts": 150}}
        if config["CodeSha256"] != pkg.sha256:
            lam.update_function_code(FunctionName=full, **code)
            lam.get_waiter("function_updated_v2").wait(**wait)
        if not self._config_matches(config):
            lam.update_function_configuration(FunctionName=full, **self._wanted_config())
            lam.get_waiter("function_updated_v2").wait(**wait)

    def delete(self, name: str, local: bool = True) -> list[Change]:
        """Delete ``name`` locally, from S3 and from Lambda. A piece already gone is reported as
        ``absent``, never an error."""
        check_name(name)
        changes = []
        if local:
            folder = self.folder / name
            if folder.is_dir():
                shutil.rmtree(folder)
                changes.append(Change("local folder", str(folder), "deleted"))
            else:
                changes.append(Change("local folder", str(folder), "absent"))
        key = self.s3_key(name)
        if not self.bucket:
            changes.append(Change("S3 object", key, "kept", "PULLY_S3_BUCKET is not set"))
        else:
            where = f"s3://{self.bucket}/{key}"
            head = absent_ok(self.aws.s3.head_object, Bucket=self.bucket, Key=key)
            if head is None:
                changes.append(Change("S3 object", where, "absent"))
            else:
                self.aws.s3.delete_object(Bucket=self.bucket, Key=key)
                changes.append(Change("S3 object", where, "deleted"))
        full = self.lambda_name(name)
        gone = absent_ok(self.aws.lambda_.delete_function, FunctionName=full)
        changes.append(Change("Lambda function", full, "absent" if gone is None else "deleted"))
        return changes


class LambdaStep(Step):
    """Part of the stack only for ``destroy`` and ``status``: functions are deployed by
    ``pully function deploy``, which tags them with the stack; ``destroy`` deletes those."""

    title = "Lambda functions"

    def _tagged(self) -> list[str]:
        lam = self.aws.lambda_
        names = []
        for config in paginate(lam, "list_functions", "Functions"):
            if not str(config["FunctionName"]).startswith(self.config.lambda_prefix):
                continue
            tags = absent_ok(lam.list_tags, Resource=config["FunctionArn"])
            if tags and tags.get("Tags", {}).get(STACK_TAG) == self.config.stack:
                names.append(str(config["FunctionName"]))
        return names

    def apply(self) -> list[Change]:
        return []

    def remove(self) -> list[Change]:
        changes = []
        for full in self._tagged():
            try:
                self.aws.lambda_.delete_function(FunctionName=full)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
            changes.append(Change(self.title, full, "deleted"))
        return changes

    def status(self) -> list[Row]:
        names = self._tagged()
        detail = ", ".join(names) if names else "none (pully function deploy)"
        return [
            Row(self.title, self.config.lambda_prefix + "*", f"{len(names)} deployed", True, detail)
        ]
