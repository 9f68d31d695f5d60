# ruff: noqa: F811 - a test's fixture argument shadows the fixture imported by name
"""``pully deploy | status | destroy`` against moto over real HTTP: every resource of the stack
created in order from the templates in ``ecs/``, a second deploy that changes nothing, a
destroy that leaves nothing (through click's runner here; test_deploy_docs runs the same
commands as subprocesses)."""

from __future__ import annotations

from typing import Any

from .aws_support import BUCKET, Aws, Cli, aws, cli, local_cli, moto_url, one_line_error  # noqa: F401 - fixtures

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pully:1"
REDIS = "redis://pully-redis.example.internal:6379/0"


def configure(cli: Cli, aws: Aws, **extra: str) -> None:
    cli.env.update(aws.env, PULLY_S3_BUCKET=BUCKET, PULLY_STACK="chat", PULLY_IMAGE=IMAGE,
                   PULLY_REDIS_URL=REDIS, **extra)  # fmt: skip


def inventory(aws: Aws, stack: str = "chat") -> dict[str, Any]:
    """Everything of the stack that exists, read straight from AWS."""
    ecs, elb, ec2 = aws.client("ecs"), aws.client("elbv2"), aws.client("ec2")
    aas, iam, ssm = aws.client("application-autoscaling"), aws.client("iam"), aws.client("ssm")
    clusters = [c for c in ecs.describe_clusters(clusters=[stack])["clusters"]
                if c["status"] == "ACTIVE"]  # fmt: skip
    services = []
    if clusters:
        services = [s for s in ecs.describe_services(cluster=stack, services=[stack])["services"]
                    if s["status"] == "ACTIVE"]  # fmt: skip
    lbs = [lb for lb in elb.describe_load_balancers()["LoadBalancers"]]
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag:pully:stack", "Values": [stack]}])[
        "SecurityGroups"
    ]
    return {
        "clusters": clusters,
        "services": services,
        "task_definitions": ecs.list_task_definitions(familyPrefix=stack, status="ACTIVE")[
            "taskDefinitionArns"
        ],
        "load_balancers": lbs,
        "listeners": [li for lb in lbs for li in
                      elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]],
        "target_groups": elb.describe_target_groups()["TargetGroups"],
        "security_groups": sorted(g["GroupName"] for g in groups),
        "scalable_targets": aas.describe_scalable_targets(ServiceNamespace="ecs")[
            "ScalableTargets"
        ],
        "policies": aas.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"],
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]
                        if r["RoleName"].startswith(f"{stack}-")),
        "parameters": sorted(p["Name"] for p in ssm.describe_parameters()["Parameters"]),
        "log_groups": [g["logGroupName"] for g in
                       aws.client("logs").describe_log_groups()["logGroups"]],
        "buckets": [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]],
    }  # fmt: skip


def test_deploy_twice_status_destroy(local_cli: Cli, aws: Aws) -> None:
    """In process; test_deploy_docs runs the same cycle as subprocesses (the walkthrough)."""
    cli = local_cli
    configure(cli, aws)
    first = cli("deploy", "--yes")
    assert first.exit_code == 0, first.output
    assert "Deployed stack 'chat':" in first.stdout
    assert "URL: http://chat-" in first.stdout and "/ws)" in first.stdout
    created = inventory(aws)
    assert len(created["clusters"]) == 1 and len(created["services"]) == 1
    assert len(created["task_definitions"]) == 1
    assert len(created["load_balancers"]) == 1 and len(created["listeners"]) == 1
    assert len(created["target_groups"]) == 1
    assert created["security_groups"] == ["chat-alb", "chat-tasks"]
    assert len(created["scalable_targets"]) == 1 and len(created["policies"]) == 2
    assert created["roles"] == ["chat-execution", "chat-task"]
    assert created["parameters"] == ["/chat/admin-token", "/chat/jwt-secret"]
    assert created["log_groups"] == ["/ecs/chat"] and created["buckets"] == [BUCKET]

    second = cli("deploy", "--yes")
    assert second.exit_code == 0, second.output
    assert "Nothing changed: stack 'chat' is up to date" in second.stdout
    assert all(line.startswith("unchanged") for line in second.stdout.splitlines()[:-3])
    again = inventory(aws)
    for key, value in again.items():
        assert len(value) == len(created[key]), key  # no duplicates

    status = cli("status")
    assert status.exit_code == 1, status.output  # moto runs no task: deployed, not healthy
    assert "0/1 running" in status.stdout and "not healthy yet" in status.stdout
    assert "/healthz" in status.stdout

    gone = cli("destroy", "--yes")
    assert gone.exit_code == 0, gone.output
    assert "Destroyed stack 'chat':" in gone.stdout
    left = inventory(aws)
    assert all(not value for value in left.values()), left


def test_destroy_tolerates_what_is_already_gone(local_cli: Cli, aws: Aws) -> None:
    configure(local_cli, aws)
    missing = local_cli("status")
    assert missing.exit_code == 1 and "Stack 'chat' is not deployed" in missing.stdout
    nothing = local_cli("destroy", "--yes")
    assert nothing.exit_code == 0, nothing.output
    assert "Nothing to destroy: stack 'chat' does not exist." in nothing.stdout
    assert local_cli("deploy", "--yes").exit_code == 0
    elb = aws.client("elbv2")  # someone deleted the load balancer by hand
    (lb,) = elb.describe_load_balancers(Names=["chat"])["LoadBalancers"]
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    result = local_cli("destroy", "--yes")
    assert result.exit_code == 0, result.output
    assert any(line.startswith("absent") and "Load balancer" in line
               for line in result.stdout.splitlines())  # fmt: skip
    assert all(not value for value in inventory(aws).values())


def test_the_templates_register_as_written(local_cli: Cli, aws: Aws) -> None:
    """What ECS, ELBv2 and Application Auto Scaling stored is what ecs/ says."""
    configure(local_cli, aws)
    assert local_cli("deploy", "--yes").exit_code == 0
    ecs, elb = aws.client("ecs"), aws.client("elbv2")
    td = ecs.describe_task_definition(taskDefinition="chat")["taskDefinition"]
    assert td["networkMode"] == "awsvpc" and td["requiresCompatibilities"] == ["FARGATE"]
    (container,) = td["containerDefinitions"]
    assert container["image"] == IMAGE
    assert container["portMappings"][0]["containerPort"] == 8080
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["PULLY_REDIS_URL"] == REDIS
    assert env["PULLY_STORE"] == f"s3://{BUCKET}/relationships.json"
    assert env["AWS_REGION"] == aws.region
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    assert secrets["PULLY_ADMIN_TOKEN"].endswith(":parameter/chat/admin-token")
    assert secrets["PULLY_JWT_SECRET"].endswith(":parameter/chat/jwt-secret")
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/ecs/chat"
    assert "/healthz" in " ".join(container["healthCheck"]["command"])
    assert container["stopTimeout"] > float(env["PULLY_DRAIN_TIMEOUT"])
    assert td["executionRoleArn"].endswith(":role/chat-execution")
    assert td["taskRoleArn"].endswith(":role/chat-task")

    (service,) = ecs.describe_services(cluster="chat", services=["chat"])["services"]
    assert service["launchType"] == "FARGATE" and service["desiredCount"] == 1
    assert service["loadBalancers"][0]["containerPort"] == 8080
    (lb,) = elb.describe_load_balancers(Names=["chat"])["LoadBalancers"]
    attrs = elb.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])
    assert {"Key": "idle_timeout.timeout_seconds", "Value": "3600"} in attrs["Attributes"]
    (tg,) = elb.describe_target_groups(Names=["chat"])["TargetGroups"]
    assert tg["HealthCheckPath"] == "/healthz" and tg["TargetType"] == "ip"
    assert service["loadBalancers"][0]["targetGroupArn"] == tg["TargetGroupArn"]

    aas = aws.client("application-autoscaling")
    (target,) = aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    metrics = sorted(
        p["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]
        for p in aas.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"]
    )
    assert metrics == ["ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization"]


def test_a_new_image_updates_only_the_task_definition_and_the_service(
    local_cli: Cli, aws: Aws
) -> None:
    configure(local_cli, aws)
    assert local_cli("deploy", "--yes").exit_code == 0
    result = local_cli("deploy", "--yes", "--image", IMAGE.replace(":1", ":2"))
    assert result.exit_code == 0, result.output
    changed = sorted(line.split()[1:3] for line in result.stdout.splitlines()
                     if line.startswith(("created", "updated")))  # fmt: skip
    assert changed == [["ECS", "service"], ["Task", "definition"]], result.stdout
    ecs = aws.client("ecs")
    assert len(ecs.list_task_definitions(familyPrefix="chat")["taskDefinitionArns"]) == 2
    (service,) = ecs.describe_services(cluster="chat", services=["chat"])["services"]
    assert service["taskDefinition"].endswith("/chat:2")


def test_scaling_bounds_and_network_from_flags(local_cli: Cli, aws: Aws) -> None:
    configure(local_cli, aws)
    ec2 = aws.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"])[:2]  # fmt: skip
    result = local_cli("deploy", "--yes", "--vpc", vpc["VpcId"], "--subnets", ",".join(subnets),
                       "--min-tasks", "2", "--max-tasks", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    (service,) = aws.client("ecs").describe_services(cluster="chat", services=["chat"])["services"]
    assert sorted(service["networkConfiguration"]["awsvpcConfiguration"]["subnets"]) == subnets
    aas = aws.client("application-autoscaling")
    (target,) = aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 3)
    one_line_error(
        local_cli("deploy", "--yes", "--subnets", "subnet-nope,subnet-nada"),
        1,
        "pully: subnets not in vpc-",
    )


def test_deploy_and_destroy_ask_first(local_cli: Cli, aws: Aws) -> None:
    configure(local_cli, aws)
    refused = local_cli("deploy", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.stderr
    assert "Deploy stack 'chat' (region eu-west-1, account 123456789012" in refused.stderr
    assert inventory(aws)["buckets"] == []
    assert local_cli("deploy", input="y\n").exit_code == 0
    kept = local_cli("destroy", input="n\n")
    assert kept.exit_code == 1 and len(inventory(aws)["services"]) == 1


def test_deploy_needs_an_image_a_redis_and_a_bucket(local_cli: Cli, aws: Aws) -> None:
    local_cli.env.update(aws.env)
    one_line_error(local_cli("deploy", "--yes"), 1, "pully: PULLY_S3_BUCKET is not set")
    local_cli.env["PULLY_S3_BUCKET"] = BUCKET
    one_line_error(local_cli("deploy", "--yes"), 1, "pully: no container image")
    local_cli.env["PULLY_IMAGE"] = IMAGE
    one_line_error(local_cli("deploy", "--yes"), 1, "pully: no Redis")
    one_line_error(
        local_cli("deploy", "--yes", "--redis-url", "localhost"),
        2,
        "pully: invalid --redis-url / PULLY_REDIS_URL",
    )
    one_line_error(
        local_cli("deploy", "--yes", "--redis-url", REDIS, "--stack", "Chat_App"),
        1,
        "pully: invalid PULLY_STACK 'Chat_App'",
    )
    assert inventory(aws, "Chat_App")["buckets"] == []


def test_destroy_keeps_a_bucket_it_did_not_create(local_cli: Cli, aws: Aws) -> None:
    configure(local_cli, aws)
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws.region})
    s3.put_object(Bucket=BUCKET, Key="keep.txt", Body=b"mine")
    assert local_cli("deploy", "--yes").exit_code == 0
    result = local_cli("destroy", "--yes")
    assert result.exit_code == 0, result.output
    assert any(line.startswith("kept") and BUCKET in line for line in result.stdout.splitlines())
    assert s3.get_object(Bucket=BUCKET, Key="keep.txt")["Body"].read() == b"mine"


def test_destroy_removes_the_stacks_lambda_functions(local_cli: Cli, aws: Aws) -> None:
    configure(local_cli, aws, PULLY_LAMBDA_ROLE=aws.lambda_role())
    assert local_cli("function", "add", "upper").exit_code == 0
    assert local_cli("deploy", "--yes").exit_code == 0
    assert local_cli("function", "deploy").exit_code == 0
    status = local_cli("status")
    assert "pully-upper" in status.stdout
    result = local_cli("destroy", "--yes")
    assert result.exit_code == 0, result.output
    assert aws.client("lambda").list_functions()["Functions"] == []
    assert (local_cli.cwd / "functions" / "upper" / "handler.py").is_file()  # local code stays


def test_a_certificate_adds_https_and_turns_http_into_a_redirect(local_cli: Cli, aws: Aws) -> None:
    configure(local_cli, aws)
    assert local_cli("deploy", "--yes").exit_code == 0
    cert = aws.client("acm").request_certificate(DomainName="chat.example.com")["CertificateArn"]
    result = local_cli("deploy", "--yes", "--certificate-arn", cert)
    assert result.exit_code == 0, result.output
    assert "URL: https://chat-" in result.stdout and "(WebSocket: wss://" in result.stdout
    elb = aws.client("elbv2")
    (lb,) = elb.describe_load_balancers(Names=["chat"])["LoadBalancers"]
    found = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    listeners = {li["Port"]: li for li in found}
    assert sorted(listeners) == [80, 443]
    assert listeners[443]["Protocol"] == "HTTPS"
    assert listeners[443]["Certificates"][0]["CertificateArn"] == cert
    assert listeners[443]["DefaultActions"][0]["Type"] == "forward"
    assert listeners[80]["DefaultActions"][0]["Type"] == "redirect"
    (group,) = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["chat-alb"]}]
    )["SecurityGroups"]
    assert {p["FromPort"] for p in group["IpPermissions"]} == {80, 443}

    again = local_cli("deploy", "--yes", "--certificate-arn", cert)
    assert "Nothing changed" in again.stdout, again.output
    back = local_cli("deploy", "--yes")  # without the certificate: plain HTTP again
    assert back.exit_code == 0, back.output
    assert any(line.startswith("deleted") and "HTTPS:443" in line
               for line in back.stdout.splitlines())  # fmt: skip
    listeners = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert [(li["Port"], li["DefaultActions"][0]["Type"]) for li in listeners] == [(80, "forward")]
