"""Function names, checked before anything touches the disk or AWS."""

from __future__ import annotations

import re

from ..relationships.schema import FUNCTION_NAME
from .errors import DeployError

NAME = re.compile(FUNCTION_NAME)


def check_name(name: str) -> str:
    """``name`` if it is a valid function name (``[a-z0-9_-]{1,64}``, the relationships
    schema's rule); raises :class:`DeployError` otherwise."""
    if not NAME.match(name):
        raise DeployError(f"invalid function name {name!r}: use 1-64 chars of a-z 0-9 _ -")
    return name
