"""Relationships: the document that attaches functions and options to channels, and where it is
stored."""

from .options import NO_OPTIONS, ChannelOptions
from .schema import (
    EMPTY,
    FunctionSpec,
    InvalidRelationships,
    Relationships,
    digest,
    dumps,
    load,
    loads,
)

__all__ = [
    "EMPTY",
    "NO_OPTIONS",
    "ChannelOptions",
    "FunctionSpec",
    "InvalidRelationships",
    "Relationships",
    "digest",
    "dumps",
    "load",
    "loads",
]
