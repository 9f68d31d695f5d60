"""The two IAM roles of the tasks, each with one inline policy (least privilege, no managed
policy to look up): the *execution* role lets ECS pull the image, write logs and read the two
secrets; the *task* role lets a node read and write its bucket and invoke the stack's Lambda
functions."""

from __future__ import annotations

import json
from typing import Any

from .aws import absent_ok
from .base import Action, Change, Row, Step, changed

POLICY = "pully"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
         "Action": "sts:AssumeRole"},
    ],
}  # fmt: skip


def _canonical(doc: Any) -> str:
    if isinstance(doc, str):  # some endpoints return the JSON text, AWS returns it decoded
        doc = json.loads(doc)
    return json.dumps(doc, sort_keys=True)


class RolesStep(Step):
    title = "IAM role"

    def _policies(self) -> list[tuple[str, str, dict[str, Any]]]:
        c, o = self.config, self.out
        execution = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Resource": "*", "Action": [
                    "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]},
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": f"arn:aws:logs:*:*:log-group:{c.log_group}:*"},
                {"Effect": "Allow", "Action": ["ssm:GetParameters"],
                 "Resource": [o.admin_token_arn or "*", o.jwt_secret_arn or "*"]},
            ],
        }  # fmt: skip
        task = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                 "Resource": f"arn:aws:s3:::{c.bucket}/*"},
                {"Effect": "Allow", "Action": ["s3:ListBucket"],
                 "Resource": f"arn:aws:s3:::{c.bucket}"},
                {"Effect": "Allow", "Action": ["lambda:InvokeFunction"],
                 "Resource": f"arn:aws:lambda:*:*:function:{c.lambda_prefix}*"},
            ],
        }  # fmt: skip
        return [
            ("execution_role_arn", c.execution_role, execution),
            ("task_role_arn", c.task_role, task),
        ]

    def apply(self) -> list[Change]:
        iam = self.aws.client("iam")
        changes = []
        for attr, name, policy in self._policies():
            role = absent_ok(iam.get_role, RoleName=name)
            action: Action = "unchanged"
            if role is None:
                role = iam.create_role(
                    RoleName=name,
                    AssumeRolePolicyDocument=json.dumps(TRUST),
                    Description=f"Pully stack {self.config.stack}",
                    Tags=self.tags(),
                )
                action = "created"
            elif _canonical(role["Role"]["AssumeRolePolicyDocument"]) != _canonical(TRUST):
                iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(TRUST))
                action = "updated"
            current = absent_ok(iam.get_role_policy, RoleName=name, PolicyName=POLICY)
            if current is None or _canonical(current["PolicyDocument"]) != _canonical(policy):
                iam.put_role_policy(
                    RoleName=name, PolicyName=POLICY, PolicyDocument=json.dumps(policy)
                )
                action = changed(action)
            setattr(self.out, attr, role["Role"]["Arn"])
            changes.append(Change(self.title, name, action))
        return changes

    def remove(self) -> list[Change]:
        iam = self.aws.client("iam")
        changes = []
        for _, name, _ in reversed(self._policies()):
            if absent_ok(iam.get_role, RoleName=name) is None:
                changes.append(Change(self.title, name, "absent"))
                continue
            for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=policy)
            for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
            iam.delete_role(RoleName=name)
            changes.append(Change(self.title, name, "deleted"))
        return changes

    def status(self) -> list[Row]:
        iam = self.aws.client("iam")
        rows = []
        for _, name, _ in self._policies():
            ok = absent_ok(iam.get_role, RoleName=name) is not None
            rows.append(Row(self.title, name, "present" if ok else "missing", ok))
        return rows
