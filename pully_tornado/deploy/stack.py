"""``pully deploy`` / ``destroy`` / ``status``: the whole stack, one step after the other.

Deploy order (destroy runs it backwards): S3 bucket, Lambda functions (destroy only), SSM
secrets, log group, IAM roles, ECS cluster, task definition, network (VPC, subnets, security
groups), load balancer (target group, ALB, listener), Fargate service, autoscaling.

Every step changes only what differs from its template, so a second deploy reports every
resource ``unchanged``; destroy reports what was already gone as ``absent`` and carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .aws import Aws
from .base import Change, Outputs, Row, StackConfig, Step
from .ecs import ClusterStep, ServiceStep, TaskDefinitionStep
from .functions import LambdaStep
from .iam import RolesStep
from .loadbalancer import LoadBalancerStep
from .network import NetworkStep
from .scaling import ScalingStep
from .storage import BucketStep, LogsStep, SecretsStep

STEPS: tuple[type[Step], ...] = (
    BucketStep, LambdaStep, SecretsStep, LogsStep, RolesStep, ClusterStep, TaskDefinitionStep,
    NetworkStep, LoadBalancerStep, ServiceStep, ScalingStep,
)  # fmt: skip

OnStep = Callable[[Step], None]
OnChange = Callable[[Change], None]


def _quiet(_: object) -> None:
    return None


@dataclass
class Result:
    changes: list[Change] = field(default_factory=list)
    outputs: Outputs = field(default_factory=Outputs)

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.action not in ("unchanged", "absent", "kept")]

    @property
    def url(self) -> str:
        scheme = "https" if self.outputs.https else "http"
        return f"{scheme}://{self.outputs.dns_name}" if self.outputs.dns_name else ""


class Stack:
    """One stack (``PULLY_STACK``) in one region."""

    def __init__(self, config: StackConfig, aws: Aws) -> None:
        self.config = config
        self.aws = aws

    def steps(self, out: Outputs) -> list[Step]:
        return [step(self.config, self.aws, out) for step in STEPS]

    def deploy(self, on_step: OnStep = _quiet, on_change: OnChange = _quiet) -> Result:
        """Create or update every resource, in order. Raises :class:`DeployError` (or AWS's
        error) at the first step that fails; the steps before it stay applied."""
        self.config.check(deploying=True)
        result = Result()
        for step in self.steps(result.outputs):
            on_step(step)
            for change in step.apply():
                result.changes.append(change)
                on_change(change)
        return result

    def destroy(self, on_step: OnStep = _quiet, on_change: OnChange = _quiet) -> Result:
        """Delete every resource, in reverse order; absent ones are reported, not errors."""
        self.config.check(deploying=False)
        result = Result()
        for step in reversed(self.steps(result.outputs)):
            on_step(step)
            for change in step.remove():
                result.changes.append(change)
                on_change(change)
        return result

    def status(self, on_step: OnStep = _quiet) -> list[Row]:
        """What exists and whether it is healthy; changes nothing."""
        self.config.check(deploying=False)
        rows: list[Row] = []
        for step in self.steps(Outputs()):
            on_step(step)
            rows += step.status()
        return rows
