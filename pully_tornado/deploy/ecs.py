"""ECS: the cluster, the task definition from ``ecs/task-definition.json`` and the Fargate
service from ``ecs/service.json``.

Task definitions and services carry a ``pully:fingerprint`` tag, the hash of the rendered
template: equal means nothing to do, so a second ``pully deploy`` registers no revision and
starts no rollout. ECS's own copy is normalized (defaults added), which makes comparing it
field by field unreliable.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions

from .aws import STACK_TAG, error_code, paginate
from .base import Action, Change, Row, Step
from .templates import fingerprint

FINGERPRINT_TAG = "pully:fingerprint"
UPDATABLE = ("taskDefinition", "networkConfiguration", "loadBalancers", "platformVersion",
             "healthCheckGracePeriodSeconds", "deploymentConfiguration", "propagateTags",
             "enableECSManagedTags", "enableExecuteCommand", "capacityProviderStrategy",
             "placementConstraints", "placementStrategy", "serviceRegistries")  # fmt: skip


def _ecs_tags(stack: str, fp: str) -> list[dict[str, str]]:
    return [{"key": STACK_TAG, "value": stack}, {"key": FINGERPRINT_TAG, "value": fp}]


def _fingerprint_of(tags: list[dict[str, str]]) -> str | None:
    return next((t["value"] for t in tags if t["key"] == FINGERPRINT_TAG), None)


def _active_cluster(step: Step) -> dict[str, Any] | None:
    found = step.aws.client("ecs").describe_clusters(clusters=[step.config.cluster])
    active = [c for c in found["clusters"] if c["status"] == "ACTIVE"]
    return dict(active[0]) if active else None


class ClusterStep(Step):
    title = "ECS cluster"

    def apply(self) -> list[Change]:
        if _active_cluster(self) is not None:
            return [Change(self.title, self.config.cluster, "unchanged")]
        self.aws.client("ecs").create_cluster(
            clusterName=self.config.cluster,
            settings=[{"name": "containerInsights", "value": "enabled"}],
            tags=[{"key": STACK_TAG, "value": self.config.stack}],
        )
        return [Change(self.title, self.config.cluster, "created")]

    def remove(self) -> list[Change]:
        if _active_cluster(self) is None:
            return [Change(self.title, self.config.cluster, "absent")]
        self.aws.client("ecs").delete_cluster(cluster=self.config.cluster)
        return [Change(self.title, self.config.cluster, "deleted")]

    def status(self) -> list[Row]:
        cluster = _active_cluster(self)
        if cluster is None:
            return [Row(self.title, self.config.cluster, "missing", False)]
        running = cluster.get("runningTasksCount", 0)
        return [Row(self.title, self.config.cluster, "ACTIVE", True, f"{running} tasks running")]


class TaskDefinitionStep(Step):
    title = "Task definition"

    def _latest(self) -> dict[str, Any] | None:
        """The family's latest revision, if it is ACTIVE."""
        ecs = self.aws.client("ecs")
        try:
            found = ecs.describe_task_definition(
                taskDefinition=self.config.family, include=["TAGS"]
            )
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in ("ClientException", "ResourceNotFoundException"):
                return None  # ECS says "Unable to describe task definition."
            raise
        return dict(found) if found["taskDefinition"].get("status") == "ACTIVE" else None

    def _revisions(self) -> list[str]:
        family = self.config.family
        return [
            arn for arn in paginate(self.aws.client("ecs"), "list_task_definitions",
                                    "taskDefinitionArns", familyPrefix=family, status="ACTIVE")
            if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family
        ]  # fmt: skip

    def apply(self) -> list[Change]:
        spec = self.template("task-definition.json")
        fp = fingerprint(spec)
        latest = self._latest()
        if latest is not None:
            arn = latest["taskDefinition"]["taskDefinitionArn"]
            if _fingerprint_of(latest.get("tags", [])) == fp:
                self.out.task_definition_arn = arn
                return [Change(self.title, _short(arn), "unchanged", self.config.image or "")]
        registered = self.aws.client("ecs").register_task_definition(
            **spec, tags=_ecs_tags(self.config.stack, fp)
        )["taskDefinition"]
        arn = registered["taskDefinitionArn"]
        self.out.task_definition_arn = arn
        action: Action = "updated" if latest is not None else "created"
        return [Change(self.title, _short(arn), action, self.config.image or "")]

    def remove(self) -> list[Change]:
        ecs = self.aws.client("ecs")
        arns = self._revisions()
        for arn in arns:
            ecs.deregister_task_definition(taskDefinition=arn)
        if not arns:
            return [Change(self.title, self.config.family, "absent")]
        return [Change(self.title, self.config.family, "deleted", f"{len(arns)} revisions")]

    def status(self) -> list[Row]:
        latest = self._latest()
        if latest is None:
            return [Row(self.title, self.config.family, "missing", False)]
        td = latest["taskDefinition"]
        image = td["containerDefinitions"][0].get("image", "?")
        return [Row(self.title, _short(td["taskDefinitionArn"]), "ACTIVE", True, image)]


class ServiceStep(Step):
    title = "ECS service"

    def _service(self) -> dict[str, Any] | None:
        if _active_cluster(self) is None:
            return None
        found = self.aws.client("ecs").describe_services(
            cluster=self.config.cluster, services=[self.config.service]
        )
        active = [s for s in found["services"] if s["status"] == "ACTIVE"]
        return dict(active[0]) if active else None

    def apply(self) -> list[Change]:
        ecs = self.aws.client("ecs")
        spec = self.template("service.json")
        # desiredCount belongs to autoscaling once the service exists: not part of the identity
        fp = fingerprint({k: v for k, v in spec.items() if k != "desiredCount"})
        name = spec["serviceName"]
        current = self._service()
        if current is None:
            ecs.create_service(**spec, tags=_ecs_tags(self.config.stack, fp))
            return [Change(self.title, name, "created", f"{spec.get('desiredCount')} task(s)")]
        arn = current["serviceArn"]
        tags = ecs.list_tags_for_resource(resourceArn=arn).get("tags", [])
        if _fingerprint_of(tags) == fp:
            return [Change(self.title, name, "unchanged", _short(current["taskDefinition"]))]
        update = {k: spec[k] for k in UPDATABLE if k in spec}
        ecs.update_service(cluster=spec["cluster"], service=name, **update)
        ecs.tag_resource(resourceArn=arn, tags=_ecs_tags(self.config.stack, fp))
        return [
            Change(self.title, name, "updated", f"rolling out {_short(spec['taskDefinition'])}")
        ]

    def remove(self) -> list[Change]:
        ecs = self.aws.client("ecs")
        if self._service() is None:
            return [Change(self.title, self.config.service, "absent")]
        cluster, service = self.config.cluster, self.config.service
        ecs.update_service(cluster=cluster, service=service, desiredCount=0)
        ecs.delete_service(cluster=cluster, service=service, force=True)
        ecs.get_waiter("services_inactive").wait(
            cluster=cluster, services=[service], WaiterConfig={"Delay": 10, "MaxAttempts": 60}
        )
        return [Change(self.title, service, "deleted")]

    def status(self) -> list[Row]:
        svc = self._service()
        if svc is None:
            return [Row(self.title, self.config.service, "missing", False)]
        desired, running = svc.get("desiredCount", 0), svc.get("runningCount", 0)
        rollout = next(
            (
                d.get("rolloutState", "")
                for d in svc.get("deployments", [])
                if d["status"] == "PRIMARY"
            ),
            "",
        )
        detail = f"{svc.get('pendingCount', 0)} pending, {_short(svc['taskDefinition'])}"
        if rollout:
            detail += f", rollout {rollout}"
        state = f"{running}/{desired} running"
        return [
            Row(self.title, self.config.service, state, desired > 0 and running >= desired, detail)
        ]


def _short(arn: str) -> str:
    """``family:revision`` of a task definition ARN."""
    return arn.rsplit("/", 1)[-1]
