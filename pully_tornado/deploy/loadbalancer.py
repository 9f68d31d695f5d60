"""The application load balancer, its target group (health check ``/healthz``) and its
listeners (HTTP; with ``--certificate-arn``, HTTPS and HTTP redirecting to it), from
``ecs/load-balancer.json``. Existing ones are brought in line with the
template (health check, attributes, subnets, security groups); only what differs is changed."""

from __future__ import annotations

from typing import Any

from .aws import DeployError, absent_ok
from .base import Action, Change, Row, Step, changed, contains

HEALTH_FIELDS = ("HealthCheckProtocol", "HealthCheckPath", "HealthCheckPort",
                 "HealthCheckIntervalSeconds", "HealthCheckTimeoutSeconds",
                 "HealthyThresholdCount", "UnhealthyThresholdCount", "Matcher")  # fmt: skip
FIXED_FIELDS = ("Protocol", "Port", "VpcId", "TargetType")
NOT_FOUND = ("LoadBalancerNotFound", "TargetGroupNotFound", "ListenerNotFound")


class LoadBalancerStep(Step):
    title = "Load balancer"

    @property
    def elb(self) -> Any:
        return self.aws.client("elbv2")

    def _load_balancer(self) -> dict[str, Any] | None:
        found = absent_ok(
            self.elb.describe_load_balancers, Names=[self.config.load_balancer], missing=NOT_FOUND
        )
        return dict(found["LoadBalancers"][0]) if found else None

    def _target_group(self) -> dict[str, Any] | None:
        found = absent_ok(
            self.elb.describe_target_groups, Names=[self.config.target_group], missing=NOT_FOUND
        )
        return dict(found["TargetGroups"][0]) if found else None

    def apply(self) -> list[Change]:
        spec = self.template("load-balancer.json")
        tg = self._apply_target_group(spec)
        lb = self._apply_load_balancer(spec)
        return [tg, lb, *self._apply_listeners(spec)]

    def _apply_target_group(self, spec: dict[str, Any]) -> Change:
        wanted = spec["targetGroup"]
        name = wanted["Name"]
        tg = self._target_group()
        action: Action = "unchanged"
        if tg is None:
            tg = self.elb.create_target_group(**wanted, Tags=self.tags())["TargetGroups"][0]
            action = "created"
        else:
            fixed = [k for k in FIXED_FIELDS if k in wanted and tg.get(k) != wanted[k]]
            if fixed:
                raise DeployError(
                    f"target group {name} exists with another {', '.join(fixed)} "
                    f"({', '.join(f'{k}={tg.get(k)}' for k in fixed)}): run `pully destroy` first"
                )
            health = {k: wanted[k] for k in HEALTH_FIELDS if k in wanted}
            if not contains(tg, health):
                self.elb.modify_target_group(TargetGroupArn=tg["TargetGroupArn"], **health)
                action = "updated"
        arn = tg["TargetGroupArn"]
        if self._attributes("target_group", arn, spec.get("targetGroupAttributes", [])):
            action = changed(action)
        self.out.target_group_arn = arn
        return Change("Target group", name, action, f"health check {wanted.get('HealthCheckPath')}")

    def _apply_load_balancer(self, spec: dict[str, Any]) -> Change:
        wanted = spec["loadBalancer"]
        name = wanted["Name"]
        lb = self._load_balancer()
        action: Action = "unchanged"
        if lb is None:
            lb = self.elb.create_load_balancer(**wanted, Tags=self.tags())["LoadBalancers"][0]
            action = "created"
        else:
            if lb.get("Scheme") != wanted.get("Scheme", lb.get("Scheme")):
                raise DeployError(
                    f"load balancer {name} exists with scheme {lb.get('Scheme')}: "
                    "run `pully destroy` first"
                )
            arn = lb["LoadBalancerArn"]
            subnets = sorted(z["SubnetId"] for z in lb.get("AvailabilityZones", []))
            if "Subnets" in wanted and subnets != sorted(wanted["Subnets"]):
                self.elb.set_subnets(LoadBalancerArn=arn, Subnets=wanted["Subnets"])
                action = "updated"
            groups = wanted.get("SecurityGroups")
            if groups is not None and sorted(lb.get("SecurityGroups", [])) != sorted(groups):
                self.elb.set_security_groups(LoadBalancerArn=arn, SecurityGroups=groups)
                action = "updated"
        arn = lb["LoadBalancerArn"]
        if self._attributes("load_balancer", arn, spec.get("loadBalancerAttributes", [])):
            action = changed(action)
        self.out.load_balancer_arn = arn
        self.out.dns_name = lb["DNSName"]
        return Change(self.title, name, action, lb["DNSName"])

    def _attributes(self, kind: str, arn: str, wanted: list[dict[str, str]]) -> bool:
        """Set the attributes that differ; True if any did."""
        if not wanted:
            return False
        key = "TargetGroupArn" if kind == "target_group" else "LoadBalancerArn"
        current = getattr(self.elb, f"describe_{kind}_attributes")(**{key: arn})["Attributes"]
        have = {a["Key"]: a["Value"] for a in current}
        differ = [a for a in wanted if have.get(a["Key"]) != a["Value"]]
        if differ:
            getattr(self.elb, f"modify_{kind}_attributes")(**{key: arn}, Attributes=differ)
        return bool(differ)

    def _apply_listeners(self, spec: dict[str, Any]) -> list[Change]:
        """HTTP forwarding to the target group; with a certificate, HTTPS forwarding and HTTP
        redirecting to it. A listener on another port of this load balancer is removed."""
        forward = [{"Type": "forward", "TargetGroupArn": self.out.target_group_arn}]
        if self.config.certificate_arn:
            wanted = [{**spec["listener"], "DefaultActions": [spec["redirectToHttps"]]},
                      {**spec["httpsListener"], "DefaultActions": forward}]  # fmt: skip
            self.out.https = True
        else:
            wanted = [{**spec["listener"], "DefaultActions": forward}]
        lb_arn = self.out.load_balancer_arn
        existing = {li["Port"]: li for li in
                    self.elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]}  # fmt: skip
        changes = []
        for listener in wanted:
            name = f"{listener['Protocol']}:{listener['Port']}"
            detail = (
                "redirects to HTTPS"
                if listener["DefaultActions"][0]["Type"] == "redirect"
                else ("forwards to the target group")
            )
            current = existing.pop(listener["Port"], None)
            if current is None:
                self.elb.create_listener(LoadBalancerArn=lb_arn, **listener, Tags=self.tags())
                changes.append(Change("Listener", name, "created", detail))
            elif contains(current, listener):
                changes.append(Change("Listener", name, "unchanged", detail))
            else:
                self.elb.modify_listener(ListenerArn=current["ListenerArn"], **listener)
                changes.append(Change("Listener", name, "updated", detail))
        for stale in existing.values():
            self.elb.delete_listener(ListenerArn=stale["ListenerArn"])
            changes.append(Change("Listener", f"{stale['Protocol']}:{stale['Port']}", "deleted"))
        return changes

    def remove(self) -> list[Change]:
        changes = []
        lb = self._load_balancer()
        if lb is None:
            changes.append(Change(self.title, self.config.load_balancer, "absent"))
        else:
            arn = lb["LoadBalancerArn"]
            for listener in self.elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]:
                self.elb.delete_listener(ListenerArn=listener["ListenerArn"])
                changes.append(
                    Change("Listener", f"{listener['Protocol']}:{listener['Port']}", "deleted")
                )
            self.elb.delete_load_balancer(LoadBalancerArn=arn)
            self.elb.get_waiter("load_balancers_deleted").wait(
                LoadBalancerArns=[arn], WaiterConfig={"Delay": 5, "MaxAttempts": 60}
            )
            changes.append(Change(self.title, self.config.load_balancer, "deleted"))
        tg = self._target_group()
        if tg is None:
            changes.append(Change("Target group", self.config.target_group, "absent"))
        else:
            self.elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
            changes.append(Change("Target group", self.config.target_group, "deleted"))
        return changes

    def status(self) -> list[Row]:
        rows = []
        lb = self._load_balancer()
        if lb is None:
            rows.append(Row(self.title, self.config.load_balancer, "missing", False))
        else:
            state = lb.get("State", {}).get("Code", "?")
            ok = state in ("active", "provisioning")
            url = f"http://{lb['DNSName']}"
            rows.append(Row(self.title, self.config.load_balancer, state, ok, url))
        tg = self._target_group()
        if tg is None:
            rows.append(Row("Target group", self.config.target_group, "missing", False))
        else:
            health = self.elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
            states = [t["TargetHealth"]["State"] for t in health["TargetHealthDescriptions"]]
            healthy = states.count("healthy")
            rows.append(Row("Target group", self.config.target_group,
                            f"{healthy}/{len(states)} healthy", healthy > 0,
                            f"health check {tg.get('HealthCheckPath')}"))  # fmt: skip
        return rows
