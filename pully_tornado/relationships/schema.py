"""The relationships document: which functions run, in order, on each channel's messages, and
per-channel options (history window, presence, who may publish).

```json
{
  "channels": {"chat": ["profanity", "uppercase"], "orders:*": ["enrich"]},
  "functions": {"enrich": {"runtime": "lambda", "timeout": 2.0, "on_error": "reject"}},
  "options": {"ticker:*": {"history_size": 1000, "publish": "server"}}
}
```

Validated with marshmallow: every problem is reported at once, each as ``path: reason``
(``channels.chat[1]: duplicate function 'uppercase'``), and a document with any problem is
rejected whole. The same schema serves ``POST /relationships``, ``pully relationships validate``
and the OpenAPI document.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from ..errors import BadRequest
from .options import NO_OPTIONS, ChannelOptions, ChannelOptionsSchema
from .rules import KEY_PATTERN, MAX_KEY_LENGTH, ChannelRules, key_problem

FUNCTION_NAME = r"^[a-z0-9_-]{1,64}$"
LAMBDA_NAME = r"^(arn:[A-Za-z0-9:_./-]+|[A-Za-z0-9_-]{1,64})$"
HTTP_URL = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"  # path: printable ASCII
RUNTIMES = ("local", "lambda", "http")
MAX_TIMEOUT = 900.0  # seconds: AWS Lambda's own ceiling
DEFAULT_TIMEOUT = 2.0


class Exactly(validate.Regexp):
    """``Regexp`` over the whole string: ``re.match`` with ``$`` would let a trailing newline
    through. The pattern (with its ``^…$``) is still what the OpenAPI document publishes."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class ChannelKey(Exactly):
    """A channel name or a glob that can match one (see :mod:`.rules`); the refusal says why.
    Its ``pattern`` (and ``max_length``) are what the OpenAPI document publishes."""

    max_length = MAX_KEY_LENGTH

    def __init__(self) -> None:
        super().__init__(KEY_PATTERN)

    def __call__(self, value: Any) -> Any:
        problem = key_problem(value) if isinstance(value, str) else "must be a string"
        if problem is not None:
            raise ValidationError(f"not a channel name or glob: {problem}")
        return value


class InvalidRelationships(BadRequest):
    """The document breaks the schema; ``problems`` lists every ``path: reason``."""

    def __init__(self, problems: list[str]) -> None:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"relationships document is invalid ({count})")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """How one function runs. ``runtime`` None means the node's ``PULLY_FUNCTIONS_RUNTIME``."""

    runtime: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    on_error: str = "reject"
    url: str | None = None
    name: str | None = None  # Lambda function name or ARN (default: prefix + function name)


@dataclass(frozen=True, slots=True)
class Relationships:
    """A valid document, immutable: a node swaps whole documents, never edits one. Lookups by
    channel (:meth:`pipeline_for`, :meth:`options_for`) are indexed and cached per document."""

    channels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    options: dict[str, ChannelOptions] = field(default_factory=dict)
    _pipelines: ChannelRules[tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _options: ChannelRules[ChannelOptions] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pipelines", ChannelRules(self.channels, ()))
        object.__setattr__(self, "_options", ChannelRules(self.options, NO_OPTIONS))

    def pipeline_for(self, channel: str) -> tuple[str, ...]:
        """The functions for ``channel``: an exact key wins; otherwise the longest matching
        glob (ties: the first in the document); no match, no functions."""
        return self._pipelines.lookup(channel)

    def options_for(self, channel: str) -> ChannelOptions:
        """The ``options`` rule for ``channel``, chosen like :meth:`pipeline_for` (one rule
        whole: its unset fields fall back to the node's settings, not to other globs)."""
        return self._options.lookup(channel)

    def spec(self, name: str) -> FunctionSpec:
        return self.functions.get(name) or FunctionSpec()

    def to_json(self) -> dict[str, Any]:
        functions = {
            name: {k: v for k, v in _spec_fields(s).items() if v is not None}
            for name, s in self.functions.items()
        }
        doc: dict[str, Any] = {"channels": {k: list(v) for k, v in self.channels.items()}}
        if functions:
            doc["functions"] = functions
        if self.options:
            doc["options"] = {k: o.to_json() for k, o in self.options.items()}
        return doc


def _spec_fields(spec: FunctionSpec) -> dict[str, Any]:
    return {"runtime": spec.runtime, "timeout": spec.timeout, "on_error": spec.on_error,
            "url": spec.url, "name": spec.name}  # fmt: skip


class _FunctionSchema(Schema):
    """What every function may set; one subclass per runtime adds the rest."""

    class Meta:
        unknown = RAISE

    timeout = fields.Float(
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_TIMEOUT),
        metadata={"description": "seconds before the call counts as failed (default 2)"},
    )
    on_error = fields.String(validate=validate.OneOf(("reject", "pass")))

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> FunctionSpec:
        return FunctionSpec(**data)


def _runtime(name: str) -> Any:
    return fields.String(required=True, validate=validate.OneOf((name,)))


_LAMBDA_NAME = fields.String(
    validate=Exactly(LAMBDA_NAME, error="not a Lambda name or ARN"),
    metadata={"description": "Lambda function name or ARN (default: PULLY_LAMBDA_PREFIX + name)"},
)


class DefaultFunctionSchema(_FunctionSchema):
    """No ``runtime``: the node's ``PULLY_FUNCTIONS_RUNTIME`` (local or lambda)."""

    name = _LAMBDA_NAME


class LocalFunctionSchema(_FunctionSchema):
    runtime = _runtime("local")


class LambdaFunctionSchema(_FunctionSchema):
    runtime = _runtime("lambda")
    name = _LAMBDA_NAME


class HttpFunctionSchema(_FunctionSchema):
    runtime = _runtime("http")
    url = fields.String(
        required=True,
        validate=Exactly(HTTP_URL, error="not an http(s) URL"),
        error_messages={"required": "required when runtime is http"},
    )


FUNCTION_SCHEMAS: dict[str | None, type[_FunctionSchema]] = {
    None: DefaultFunctionSchema, "local": LocalFunctionSchema,
    "lambda": LambdaFunctionSchema, "http": HttpFunctionSchema,
}  # fmt: skip


class FunctionField(fields.Field[FunctionSpec]):
    """A function's settings, validated by the schema of its ``runtime``; every problem is
    reported, a misplaced ``url`` or ``name`` with the runtime it belongs to."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> FunctionSpec:
        if not isinstance(value, dict):
            raise ValidationError("must be an object")
        runtime = value.get("runtime")
        if "runtime" in value and not isinstance(runtime, str):
            schema = None  # an explicit null is not "absent"
        else:
            schema = FUNCTION_SCHEMAS.get(runtime)
        problems: dict[str, Any] = {}
        if schema is None:
            problems["runtime"] = [f"Must be one of: {', '.join(RUNTIMES)}."]
            schema = DefaultFunctionSchema  # still check the other fields
        if "url" in value and runtime != "http":
            problems["url"] = ["only used with runtime http"]
        if "name" in value and runtime not in (None, "lambda"):
            problems["name"] = ["only used with runtime lambda"]
        fields_to_check = {k: v for k, v in value.items() if k not in problems}
        if schema is DefaultFunctionSchema:
            fields_to_check.pop("runtime", None)
        try:
            spec = schema().load(fields_to_check)
        except ValidationError as exc:
            assert isinstance(exc.messages, dict)
            problems.update(exc.messages)
        if problems:
            raise ValidationError(problems)
        assert isinstance(spec, FunctionSpec)
        return spec


class RelationshipsSchema(Schema):
    class Meta:
        unknown = RAISE

    channels = fields.Dict(
        keys=fields.String(validate=ChannelKey()),
        values=fields.List(
            fields.String(validate=Exactly(
                FUNCTION_NAME, error="not a function name (1-64 chars of a-z 0-9 _ -)"
            )),
            metadata={"uniqueItems": True},  # checked by _no_duplicates below
        ),
        required=True,
        metadata={"description": "channel name or glob -> ordered function names"},
    )  # fmt: skip
    functions = fields.Dict(
        keys=fields.String(validate=Exactly(
            FUNCTION_NAME, error="not a function name (1-64 chars of a-z 0-9 _ -)"
        )),
        values=FunctionField(),
        metadata={"description": "per-function settings; unlisted functions use the defaults"},
    )  # fmt: skip
    options = fields.Dict(
        keys=fields.String(validate=ChannelKey()),
        values=fields.Nested(ChannelOptionsSchema),
        metadata={"description": "channel name or glob -> channel options (exact name wins, "
                                 "then the longest glob); unset fields use the node's settings"},
    )  # fmt: skip

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _no_duplicates(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        """Checked on the raw input, so a duplicate is reported beside any other problem."""
        channels = original.get("channels") if isinstance(original, dict) else None
        errors: dict[str, dict[str, dict[int, list[str]]]] = {}
        for key, names in (channels or {}).items() if isinstance(channels, dict) else ():
            seen: set[str] = set()
            for i, name in enumerate(names if isinstance(names, list) else ()):
                if not isinstance(name, str):
                    continue  # reported by the field itself
                if name in seen:
                    msg = f"duplicate function {name!r}: each runs once per message"
                    errors.setdefault("channels", {}).setdefault(key, {})[i] = [msg]
                seen.add(name)
        if errors:
            raise ValidationError(errors)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Relationships:
        return Relationships(
            channels={k: tuple(v) for k, v in data["channels"].items()},
            functions=dict(data.get("functions", {})),
            options=dict(data.get("options", {})),
        )


_SCHEMA = RelationshipsSchema()


def _flatten(messages: Any, path: str = "") -> list[str]:
    """marshmallow's nested error dict -> ``path: reason`` lines (Dict fields nest errors under
    ``key``/``value``, Lists under indexes)."""
    if isinstance(messages, list):
        return [f"{path or 'document'}: {m}" for m in messages if isinstance(m, str)] + [
            line for m in messages if not isinstance(m, str) for line in _flatten(m, path)
        ]
    out: list[str] = []
    for key, inner in messages.items():
        if key == "_schema" or (key in ("key", "value") and isinstance(inner, list | dict)):
            out += _flatten(inner, path)
        elif isinstance(key, int):
            out += _flatten(inner, f"{path}[{key}]")
        else:
            out += _flatten(inner, f"{path}.{key}" if path else str(key))
    return out


def load(doc: Any) -> Relationships:
    """Validate a decoded document. Raises :class:`InvalidRelationships` with every problem."""
    if not isinstance(doc, dict):
        raise InvalidRelationships(["document: must be a JSON object with a 'channels' object"])
    try:
        result = _SCHEMA.load(doc)
    except ValidationError as exc:
        raise InvalidRelationships(sorted(_flatten(exc.messages))) from None
    assert isinstance(result, Relationships)
    return result


def loads(text: str | bytes) -> Relationships:
    """Parse and validate JSON text (a file, a request body)."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRelationships([f"document: not valid JSON: {exc}"]) from None
    return load(doc)


def dumps(relationships: Relationships) -> bytes:
    return orjson.dumps(relationships.to_json(), option=orjson.OPT_INDENT_2) + b"\n"


def digest(relationships: Relationships) -> str:
    """A short fingerprint of the document's content (key order ignored): two nodes running the
    same version with different digests run different documents."""
    canonical = orjson.dumps(relationships.to_json(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


EMPTY = Relationships()
