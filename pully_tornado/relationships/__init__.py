"""Relationships: the document that attaches functions to channels, and where it is stored."""

from .schema import EMPTY, FunctionSpec, InvalidRelationships, Relationships, dumps, load, loads

__all__ = [
    "EMPTY",
    "FunctionSpec",
    "InvalidRelationships",
    "Relationships",
    "dumps",
    "load",
    "loads",
]
