"""The stack's storage: the S3 bucket (relationships.json and function code), the two secrets
in SSM Parameter Store, and the CloudWatch log group."""

from __future__ import annotations

import secrets
from typing import Any

import botocore.exceptions

from .aws import STACK_TAG, Aws, DeployError, absent_ok, error_code, paginate
from .base import Action, Change, Row, Step

LOG_RETENTION_DAYS = 30


def ensure_bucket(aws: Aws, bucket: str, stack: str) -> bool:
    """Create ``bucket`` (private, tagged with the stack) unless it exists; True if created.
    Raises :class:`DeployError` when the name belongs to another account."""
    s3 = aws.s3
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in ("403", "AccessDenied", "Forbidden"):
            raise DeployError(
                f"bucket {bucket} exists but this account may not use it: bucket names are "
                "global, pick another PULLY_S3_BUCKET"
            ) from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if aws.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True,
            "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        },
    )  # fmt: skip
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": STACK_TAG, "Value": stack}]})
    return True


class BucketStep(Step):
    title = "S3 bucket"

    @property
    def bucket(self) -> str:
        assert self.config.bucket  # StackConfig.check
        return self.config.bucket

    def apply(self) -> list[Change]:
        created = ensure_bucket(self.aws, self.bucket, self.config.stack)
        return [Change(self.title, self.bucket, "created" if created else "unchanged")]

    def _owner(self) -> str | None:
        tagging = absent_ok(
            self.aws.s3.get_bucket_tagging, Bucket=self.bucket, missing=("NoSuchTagSet",)
        )
        tags = {t["Key"]: t["Value"] for t in (tagging or {}).get("TagSet", [])}
        return tags.get(STACK_TAG)

    def remove(self) -> list[Change]:
        s3 = self.aws.s3
        if absent_ok(s3.head_bucket, Bucket=self.bucket) is None:
            return [Change(self.title, self.bucket, "absent")]
        if self._owner() != self.config.stack:
            return [Change(self.title, self.bucket, "kept", "not created by pully deploy")]
        count = 0
        batch: list[dict[str, str]] = []
        for kind in ("Versions", "DeleteMarkers"):
            for obj in paginate(s3, "list_object_versions", kind, Bucket=self.bucket):
                batch.append({"Key": obj["Key"], "VersionId": obj["VersionId"]})
                if len(batch) == 1000:
                    count += self._delete(batch)
        count += self._delete(batch)
        s3.delete_bucket(Bucket=self.bucket)
        return [Change(self.title, self.bucket, "deleted", f"{count} objects")]

    def _delete(self, batch: list[dict[str, str]]) -> int:
        n = len(batch)
        if batch:
            self.aws.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": list(batch)})
            batch.clear()
        return n

    def status(self) -> list[Row]:
        s3 = self.aws.s3
        if absent_ok(s3.head_bucket, Bucket=self.bucket) is None:
            return [Row(self.title, self.bucket, "missing", False)]
        key = "relationships.json"
        head = absent_ok(s3.head_object, Bucket=self.bucket, Key=key)
        if head is None:
            detail = f"no {key} yet (pully relationships push)"
        else:
            version = head.get("Metadata", {}).get("pully-version", "?")
            detail = f"{key} version {version}"
        return [Row(self.title, self.bucket, "present", True, detail)]


class SecretsStep(Step):
    """``PULLY_ADMIN_TOKEN`` and ``PULLY_JWT_SECRET`` as SecureString parameters, created once
    with random values and never overwritten: replace a value with ``aws ssm put-parameter
    --overwrite``, then redeploy the service (ECS reads secrets when a task starts)."""

    title = "SSM parameter"

    def _names(self) -> list[tuple[str, str]]:
        c = self.config
        return [
            ("admin_token_arn", c.admin_token_parameter),
            ("jwt_secret_arn", c.jwt_secret_parameter),
        ]

    def apply(self) -> list[Change]:
        ssm = self.aws.client("ssm")
        changes = []
        for attr, name in self._names():
            found = absent_ok(ssm.get_parameter, Name=name)
            action: Action = "unchanged"
            if found is None:
                ssm.put_parameter(
                    Name=name,
                    Value=secrets.token_urlsafe(48),
                    Type="SecureString",
                    Description=f"Pully stack {self.config.stack}",
                    Tags=self.tags(),
                )
                found = ssm.get_parameter(Name=name)
                action = "created"
            setattr(self.out, attr, found["Parameter"]["ARN"])
            changes.append(Change(self.title, name, action))
        return changes

    def remove(self) -> list[Change]:
        ssm = self.aws.client("ssm")
        changes = []
        for _, name in self._names():
            gone = absent_ok(ssm.delete_parameter, Name=name)
            changes.append(Change(self.title, name, "absent" if gone is None else "deleted"))
        return changes

    def status(self) -> list[Row]:
        ssm = self.aws.client("ssm")
        rows = []
        for _, name in self._names():
            filters = [{"Key": "Name", "Values": [name]}]
            found = absent_ok(ssm.describe_parameters, ParameterFilters=filters)
            ok = bool(found and found.get("Parameters"))
            rows.append(Row(self.title, name, "present" if ok else "missing", ok))
        return rows


class LogsStep(Step):
    title = "Log group"

    def _find(self) -> dict[str, Any] | None:
        logs = self.aws.client("logs")
        name = self.config.log_group
        for group in paginate(logs, "describe_log_groups", "logGroups", logGroupNamePrefix=name):
            if group["logGroupName"] == name:
                return dict(group)
        return None

    def apply(self) -> list[Change]:
        logs = self.aws.client("logs")
        name = self.config.log_group
        group = self._find()
        action: Action = "unchanged"
        if group is None:
            logs.create_log_group(logGroupName=name, tags={STACK_TAG: self.config.stack})
            action = "created"
        if group is None or group.get("retentionInDays") != LOG_RETENTION_DAYS:
            logs.put_retention_policy(logGroupName=name, retentionInDays=LOG_RETENTION_DAYS)
            action = "created" if group is None else "updated"
        return [Change(self.title, name, action, f"{LOG_RETENTION_DAYS} days")]

    def remove(self) -> list[Change]:
        logs = self.aws.client("logs")
        name = self.config.log_group
        gone = absent_ok(logs.delete_log_group, logGroupName=name)
        return [Change(self.title, name, "absent" if gone is None else "deleted")]

    def status(self) -> list[Row]:
        group = self._find()
        name = self.config.log_group
        if group is None:
            return [Row(self.title, name, "missing", False)]
        return [Row(self.title, name, "present", True, f"{group.get('storedBytes', 0)} bytes")]
