"""What every part of the stack shares: its configuration, the values one step hands the next,
and the interface each step implements (``apply`` / ``remove`` / ``status``)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .aws import STACK_TAG, Aws, DeployError
from .errors import NO_BUCKET
from .templates import load, render

Action = Literal["created", "updated", "unchanged", "deleted", "absent", "kept"]


def changed(action: Action) -> Action:
    """The action after one more change to a resource: a new one stays ``created``."""
    return "created" if action == "created" else "updated"


STACK_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,20}[a-z0-9])?$")
CONTAINER = "pully"
CONTAINER_PORT = 8080


@dataclass(frozen=True)
class StackConfig:
    """One stack's settings, checked by :meth:`check`. Every AWS name derives from ``stack``."""

    stack: str
    region: str
    bucket: str | None
    templates: Path
    lambda_prefix: str = "pully-"
    image: str | None = None
    redis_url: str | None = None
    vpc_id: str | None = None
    subnets: tuple[str, ...] = ()
    cpu: int = 512
    memory: int = 1024
    min_tasks: int = 1
    max_tasks: int = 4
    certificate_arn: str | None = None

    def check(self, deploying: bool) -> None:
        """Raises :class:`DeployError` for a value AWS would reject later, or halfway."""
        if not STACK_NAME.match(self.stack):
            raise DeployError(
                f"invalid PULLY_STACK {self.stack!r}: 1-22 chars of a-z 0-9 -, starting with a "
                "letter (it prefixes load balancer names, which AWS limits to 32)"
            )
        if not self.bucket:
            raise DeployError(NO_BUCKET)
        if not deploying:
            return
        if not self.image:
            raise DeployError(
                "no container image: pass --image (e.g. 123456789012.dkr.ecr.REGION.amazonaws.com"
                "/pully:TAG, built from the Dockerfile) or set image under [deploy] in pully.toml"
            )
        if not self.redis_url:
            raise DeployError(
                "no Redis: pass --redis-url redis://HOST:6379/0 (ElastiCache or any Redis the "
                "tasks can reach); up to 4 tasks share channels through it"
            )
        if not 1 <= self.min_tasks <= self.max_tasks:
            raise DeployError(
                f"--min-tasks {self.min_tasks} / --max-tasks {self.max_tasks}: need 1 <= min <= max"
            )

    # every name in one place, so that deploy, destroy and status agree
    @property
    def cluster(self) -> str:
        return self.stack

    @property
    def service(self) -> str:
        return self.stack

    @property
    def family(self) -> str:
        return self.stack

    @property
    def load_balancer(self) -> str:
        return self.stack

    @property
    def target_group(self) -> str:
        return self.stack

    @property
    def alb_security_group(self) -> str:
        return f"{self.stack}-alb"

    @property
    def task_security_group(self) -> str:
        return f"{self.stack}-tasks"

    @property
    def execution_role(self) -> str:
        return f"{self.stack}-execution"

    @property
    def task_role(self) -> str:
        return f"{self.stack}-task"

    @property
    def log_group(self) -> str:
        return f"/ecs/{self.stack}"

    @property
    def admin_token_parameter(self) -> str:
        return f"/{self.stack}/admin-token"

    @property
    def jwt_secret_parameter(self) -> str:
        return f"/{self.stack}/jwt-secret"

    @property
    def scaling_resource(self) -> str:
        return f"service/{self.cluster}/{self.service}"

    @property
    def store_url(self) -> str:
        return f"s3://{self.bucket}/relationships.json"


@dataclass
class Outputs:
    """What the steps of one run learn and hand on (ARNs, ids), filled in deploy order."""

    vpc_id: str = ""
    subnets: list[str] = field(default_factory=list)
    alb_security_group: str = ""
    task_security_group: str = ""
    execution_role_arn: str = ""
    task_role_arn: str = ""
    admin_token_arn: str = ""
    jwt_secret_arn: str = ""
    task_definition_arn: str = ""
    load_balancer_arn: str = ""
    target_group_arn: str = ""
    dns_name: str = ""
    https: bool = False


@dataclass(frozen=True)
class Change:
    """What one run did to one resource."""

    resource: str
    name: str
    action: Action
    detail: str = ""


@dataclass(frozen=True)
class Row:
    """One line of ``pully status``."""

    resource: str
    name: str
    state: str
    ok: bool
    detail: str = ""


class Step(ABC):
    """One part of the stack. ``apply`` creates or updates it and changes nothing when it
    already matches; ``remove`` deletes it and tolerates its absence; ``status`` only reads."""

    title = ""

    def __init__(self, config: StackConfig, aws: Aws, out: Outputs) -> None:
        self.config = config
        self.aws = aws
        self.out = out

    @abstractmethod
    def apply(self) -> list[Change]: ...

    @abstractmethod
    def remove(self) -> list[Change]: ...

    @abstractmethod
    def status(self) -> list[Row]: ...

    def values(self) -> dict[str, Any]:
        """Every placeholder a template may use, from the config and the outputs so far."""
        c, o = self.config, self.out
        return {
            "STACK": c.stack, "REGION": c.region, "BUCKET": c.bucket or "",
            "IMAGE": c.image or "", "REDIS_URL": c.redis_url or "", "STORE": c.store_url,
            "LAMBDA_PREFIX": c.lambda_prefix, "CPU": str(c.cpu), "MEMORY": str(c.memory),
            "MIN_TASKS": c.min_tasks, "MAX_TASKS": c.max_tasks, "DESIRED_COUNT": c.min_tasks,
            "CLUSTER": c.cluster, "SERVICE": c.service, "FAMILY": c.family,
            "CONTAINER": CONTAINER, "CONTAINER_PORT": CONTAINER_PORT,
            "LOG_GROUP": c.log_group, "SCALING_RESOURCE": c.scaling_resource,
            "EXECUTION_ROLE_ARN": o.execution_role_arn, "TASK_ROLE_ARN": o.task_role_arn,
            "ADMIN_TOKEN_ARN": o.admin_token_arn, "JWT_SECRET_ARN": o.jwt_secret_arn,
            "VPC_ID": o.vpc_id, "SUBNETS": list(o.subnets),
            "ALB_SECURITY_GROUP": o.alb_security_group,
            "TASK_SECURITY_GROUP": o.task_security_group,
            "TASK_DEFINITION_ARN": o.task_definition_arn,
            "TARGET_GROUP_ARN": o.target_group_arn, "CERTIFICATE_ARN": c.certificate_arn or "",
        }  # fmt: skip

    def template(self, name: str) -> Any:
        return render(load(self.config.templates, name), self.values(), f"ecs/{name}")

    def tags(self, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
        return [{key: STACK_TAG, value: self.config.stack}]


def contains(actual: Any, wanted: Any) -> bool:
    """True when ``actual`` (AWS's copy, with its defaults added) holds everything ``wanted``
    says: dicts by key, lists item by item (same length), anything else by equality."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)
