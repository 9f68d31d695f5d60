"""Where the stack runs: a VPC (the account's default one unless ``--vpc``), its subnets (all
of them unless ``--subnets``), and two security groups: the load balancer's (HTTP, and HTTPS
with a certificate, from anywhere) and the tasks' (the container port from the load balancer
only). A rule no longer wanted (443 after the certificate is dropped) is left in place."""

from __future__ import annotations

from typing import Any

from .aws import STACK_TAG, DeployError, retry_while
from .base import CONTAINER_PORT, Action, Change, Row, Step, changed

ANYWHERE = [{"CidrIp": "0.0.0.0/0", "Description": "websocket and HTTP clients"}]
SG_RELEASE_TIMEOUT = 600.0  # seconds: Fargate task ENIs can take minutes to go away


class NetworkStep(Step):
    title = "Security group"

    def _vpc(self) -> str:
        ec2 = self.aws.client("ec2")
        if self.config.vpc_id:
            found = ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [self.config.vpc_id]}])
            if not found["Vpcs"]:
                raise DeployError(f"no VPC {self.config.vpc_id} in {self.config.region}")
            return self.config.vpc_id
        found = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])
        if not found["Vpcs"]:
            raise DeployError(
                f"this account has no default VPC in {self.config.region}: pass --vpc VPC_ID "
                "and --subnets SUBNET,SUBNET"
            )
        return str(found["Vpcs"][0]["VpcId"])

    def _subnets(self, vpc: str) -> list[str]:
        ec2 = self.aws.client("ec2")
        filters = [{"Name": "vpc-id", "Values": [vpc]}]
        if self.config.subnets:
            filters.append({"Name": "subnet-id", "Values": list(self.config.subnets)})
        subnets = ec2.describe_subnets(Filters=filters)["Subnets"]
        if self.config.subnets:
            missing = set(self.config.subnets) - {s["SubnetId"] for s in subnets}
            if missing:
                raise DeployError(f"subnets not in {vpc}: {', '.join(sorted(missing))}")
        zones = {s["AvailabilityZone"] for s in subnets}
        if len(zones) < 2:
            raise DeployError(
                f"the load balancer needs subnets in at least 2 availability zones; {vpc} "
                f"offers {len(zones)}: pass --subnets with subnets in two zones"
            )
        return sorted(s["SubnetId"] for s in subnets)

    def _group(self, name: str, vpc: str | None = None) -> dict[str, Any] | None:
        filters = [{"Name": "group-name", "Values": [name]},
                   {"Name": f"tag:{STACK_TAG}", "Values": [self.config.stack]}]  # fmt: skip
        if vpc:
            filters.append({"Name": "vpc-id", "Values": [vpc]})
        groups = self.aws.client("ec2").describe_security_groups(Filters=filters)
        return dict(groups["SecurityGroups"][0]) if groups["SecurityGroups"] else None

    def _ensure(self, name: str, vpc: str, description: str, rules: list[dict[str, Any]]) -> Change:
        ec2 = self.aws.client("ec2")
        group = self._group(name, vpc)
        action: Action = "unchanged"
        if group is None:
            created = ec2.create_security_group(
                GroupName=name, Description=description, VpcId=vpc,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": self.tags()}],
            )  # fmt: skip
            group = {"GroupId": created["GroupId"], "IpPermissions": []}
            action = "created"
        missing = [r for r in rules
                   if not any(_covers(p, r) for p in group.get("IpPermissions", []))]  # fmt: skip
        if missing:
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=missing)
            action = changed(action)
        return Change(self.title, name, action, str(group["GroupId"]))

    def apply(self) -> list[Change]:
        c, o = self.config, self.out
        o.vpc_id = self._vpc()
        o.subnets = self._subnets(o.vpc_id)
        web = [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": ANYWHERE}
               for port in ((80, 443) if c.certificate_arn else (80,))]  # fmt: skip
        alb = self._ensure(c.alb_security_group, o.vpc_id, f"Pully {c.stack} load balancer", web)
        o.alb_security_group = alb.detail
        node = [{"IpProtocol": "tcp", "FromPort": CONTAINER_PORT, "ToPort": CONTAINER_PORT,
                 "UserIdGroupPairs": [{"GroupId": o.alb_security_group}]}]  # fmt: skip
        tasks = self._ensure(c.task_security_group, o.vpc_id, f"Pully {c.stack} tasks", node)
        o.task_security_group = tasks.detail
        vpc_detail = f"{o.vpc_id}, {len(o.subnets)} subnets"
        return [
            Change(self.title, c.alb_security_group, alb.action, f"{alb.detail} in {vpc_detail}"),
            Change(self.title, c.task_security_group, tasks.action, tasks.detail),
        ]

    def remove(self) -> list[Change]:
        ec2 = self.aws.client("ec2")
        changes = []
        # the tasks' group names the load balancer's in a rule: it goes first
        for name in (self.config.task_security_group, self.config.alb_security_group):
            group = self._group(name)
            if group is None:
                changes.append(Change(self.title, name, "absent"))
                continue
            retry_while(
                {"DependencyViolation"},
                lambda g=group: ec2.delete_security_group(GroupId=g["GroupId"]),
                SG_RELEASE_TIMEOUT,
            )
            changes.append(Change(self.title, name, "deleted", str(group["GroupId"])))
        return changes

    def status(self) -> list[Row]:
        rows = []
        for name in (self.config.alb_security_group, self.config.task_security_group):
            group = self._group(name)
            if group is None:
                rows.append(Row(self.title, name, "missing", False))
            else:
                rows.append(Row(self.title, name, "present", True,
                                f"{group['GroupId']} in {group.get('VpcId', '?')}"))  # fmt: skip
        return rows


def _covers(permission: dict[str, Any], rule: dict[str, Any]) -> bool:
    """True when an existing ingress ``permission`` already grants ``rule``."""
    if any(permission.get(k) != rule[k] for k in ("IpProtocol", "FromPort", "ToPort")):
        return False
    cidrs = {r["CidrIp"] for r in permission.get("IpRanges", [])}
    groups = {g["GroupId"] for g in permission.get("UserIdGroupPairs", [])}
    return {r["CidrIp"] for r in rule.get("IpRanges", [])} <= cidrs and {
        g["GroupId"] for g in rule.get("UserIdGroupPairs", [])
    } <= groups
