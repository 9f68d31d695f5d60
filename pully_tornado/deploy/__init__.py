"""Deploying Pully to AWS with boto3. Every client honours ``PULLY_AWS_ENDPOINT_URL``.

- :mod:`.functions`: local functions against Lambda (status, deploy, delete), zipped by
  :mod:`.package`;
- :mod:`.stack`: the whole stack, ECS Fargate behind an ALB with autoscaling, from the
  templates in ``ecs/`` (:mod:`.templates`), one step per module (:mod:`.storage`,
  :mod:`.iam`, :mod:`.network`, :mod:`.ecs`, :mod:`.loadbalancer`, :mod:`.scaling`) behind the
  interface in :mod:`.base`.

Nothing is re-exported here: importing this package must not import boto3, so that
``pully serve`` starts without it.
"""
