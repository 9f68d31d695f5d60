"""Settings only the AWS commands read (``pully deploy | destroy | status``, ``pully function
status | deploy | delete``): the node never does, so ``pully serve`` takes neither their flags
nor their variables. The AWS settings the node's Lambda runtime reads too (``AWS_REGION``,
``PULLY_S3_BUCKET``, ...) stay on :class:`~pully_tornado.settings.Settings`.

No boto3 here: the CLI imports this module to build its flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .. import config_values as values
from ..config_values import Option

DEPLOY_OPTIONS: tuple[Option, ...] = (
    Option("stack", "PULLY_STACK", values.text, "pully", "Name prefix of deployed AWS resources."),
    Option("lambda_role", "PULLY_LAMBDA_ROLE", values.optional, "", "Lambda execution role ARN."),
)


@dataclass(frozen=True, slots=True)
@values.defaults_from(DEPLOY_OPTIONS)
class DeploySettings:
    """The deploy-only settings, parsed once like the node's; defaults from DEPLOY_OPTIONS."""

    stack: str = values.FROM_OPTIONS
    lambda_role: str | None = values.FROM_OPTIONS

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, str | None] | None = None,
    ) -> DeploySettings:
        """Like :meth:`Settings.load <pully_tornado.settings.Settings.load>`, for these fields."""
        return cls(**values.parse_options(DEPLOY_OPTIONS, environ, overrides))
