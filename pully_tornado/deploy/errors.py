"""The deploy code's one exception (no boto3 here: the CLI imports it for every command)."""

from __future__ import annotations

from ..errors import PullyError

NO_BUCKET = "PULLY_S3_BUCKET is not set: pass --s3-bucket NAME or set s3_bucket in pully.toml"


class DeployError(PullyError):
    """Something the operator must fix; ``message`` is one line that says what and how."""

    code = "deploy_failed"
    status = 500
