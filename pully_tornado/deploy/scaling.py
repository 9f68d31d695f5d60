"""Application Auto Scaling for the service, from ``ecs/autoscaling.json``: the scalable target
(1 to 4 tasks by default) and its target-tracking policies (CPU and memory)."""

from __future__ import annotations

from typing import Any

from .aws import absent_ok
from .base import Action, Change, Row, Step, contains

DIMENSION = "ecs:service:DesiredCount"


class ScalingStep(Step):
    title = "Autoscaling"

    @property
    def aas(self) -> Any:
        return self.aws.client("application-autoscaling")

    def _where(self) -> dict[str, str]:
        return {"ServiceNamespace": "ecs", "ResourceId": self.config.scaling_resource,
                "ScalableDimension": DIMENSION}  # fmt: skip

    def _target(self) -> dict[str, Any] | None:
        where = self._where()
        found = self.aas.describe_scalable_targets(
            ServiceNamespace="ecs", ResourceIds=[where["ResourceId"]], ScalableDimension=DIMENSION
        )["ScalableTargets"]
        return dict(found[0]) if found else None

    def _policies(self) -> dict[str, dict[str, Any]]:
        where = self._where()
        found = self.aas.describe_scaling_policies(
            ServiceNamespace="ecs", ResourceId=where["ResourceId"], ScalableDimension=DIMENSION
        )["ScalingPolicies"]
        return {p["PolicyName"]: p for p in found}

    def apply(self) -> list[Change]:
        spec = self.template("autoscaling.json")
        target_spec = spec["scalableTarget"]
        resource = target_spec["ResourceId"]
        size = f"{target_spec['MinCapacity']} to {target_spec['MaxCapacity']} tasks"
        current = self._target()
        if current is None or not contains(current, target_spec):
            self.aas.register_scalable_target(**target_spec)
            action: Action = "created" if current is None else "updated"
        else:
            action = "unchanged"
        changes = [Change("Scalable target", resource, action, size)]
        existing = self._policies()
        for policy in spec.get("policies", []):
            name = policy["PolicyName"]
            have = existing.get(name)
            if have is not None and contains(have, policy):
                changes.append(Change("Scaling policy", name, "unchanged", _metric(policy)))
                continue
            self.aas.put_scaling_policy(**policy, **self._where())
            action = "created" if have is None else "updated"
            changes.append(Change("Scaling policy", name, action, _metric(policy)))
        return changes

    def remove(self) -> list[Change]:
        changes = []
        for name in self._policies():
            gone = absent_ok(
                self.aas.delete_scaling_policy,
                PolicyName=name,
                **self._where(),
                missing=("ObjectNotFoundException",),
            )
            changes.append(Change("Scaling policy", name, "absent" if gone is None else "deleted"))
        resource = self.config.scaling_resource
        if self._target() is None:
            changes.append(Change("Scalable target", resource, "absent"))
        else:
            absent_ok(
                self.aas.deregister_scalable_target,
                **self._where(),
                missing=("ObjectNotFoundException",),
            )
            changes.append(Change("Scalable target", resource, "deleted"))
        return changes

    def status(self) -> list[Row]:
        target = self._target()
        resource = self.config.scaling_resource
        if target is None:
            return [Row("Scalable target", resource, "missing", False)]
        rows = [Row("Scalable target", resource, "registered", True,
                    f"{target['MinCapacity']} to {target['MaxCapacity']} tasks")]  # fmt: skip
        for name, policy in sorted(self._policies().items()):
            rows.append(Row("Scaling policy", name, "present", True, _metric(policy)))
        return rows


def _metric(policy: dict[str, Any]) -> str:
    config = policy.get("TargetTrackingScalingPolicyConfiguration", {})
    metric = config.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType", "?")
    return f"{metric} at {config.get('TargetValue')}"
