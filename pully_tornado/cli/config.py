"""``pully.toml``: the project's own defaults for every command, below flags and environment.

```toml
stack = "acme-chat"                 # any setting, by its field name (PULLY_STACK -> stack)
aws_region = "eu-west-1"
s3_bucket = "acme-chat-pully"
lambda_role = "arn:aws:iam::123456789012:role/acme-chat-lambda"

[deploy]                            # pully deploy only
image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pully:0.1.0"
subnets = ["subnet-0a1b", "subnet-2c3d"]

[relationships]                     # pully relationships validate / push
file = "relationships.json"
url = "http://localhost:8080"
```

Precedence: a flag, then the environment variable, then ``pully.toml``, then the default.
Secrets (``admin_token``, ``jwt_secret``) are refused here: a file in the project folder ends
up in version control; pass them in the environment.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..deploy.options import DEPLOY_OPTIONS
from ..errors import ConfigError
from ..settings import OPTIONS

FILENAME = "pully.toml"
SECRETS = ("admin_token", "jwt_secret")
SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "deploy": {
        "image": str, "vpc": str, "subnets": list, "cpu": int, "memory": int,
        "min_tasks": int, "max_tasks": int, "templates": str, "certificate_arn": str,
    },
    "relationships": {"file": str, "url": str},
}  # fmt: skip
_OPTIONS = {o.field: o for o in (*OPTIONS, *DEPLOY_OPTIONS)}


@dataclass(frozen=True)
class ProjectConfig:
    """What ``pully.toml`` says: settings as environment variables, plus the command tables."""

    path: Path | None = None
    environ: dict[str, str] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.get(name, {})

    @classmethod
    def load(cls, path: Path | None = None) -> ProjectConfig:
        """Read ``path`` (default ``./pully.toml``; absent is fine unless ``path`` was given).
        Raises :class:`ConfigError` naming the file and key for anything it does not know."""
        explicit = path is not None
        path = path or Path(FILENAME)
        if not path.is_file():
            if explicit:
                raise ConfigError(f"--config {path}", "no such file")
            return cls()
        source = str(path)
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, f"cannot read it: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, f"not valid TOML: {exc}") from None
        environ: dict[str, str] = {}
        sections: dict[str, dict[str, Any]] = {}
        for key, value in doc.items():
            if key in SECTIONS and isinstance(value, dict):
                sections[key] = _section(source, key, value)
            elif key in SECRETS:
                raise ConfigError(
                    f"{source} {key}", "secrets do not belong in a project file: set "
                    f"{_OPTIONS[key].env} in the environment",
                )  # fmt: skip
            elif key in _OPTIONS:
                opt = _OPTIONS[key]
                raw = _text(value)
                try:
                    opt.parse(raw)
                except ValueError as exc:
                    raise ConfigError(f"{source} {key}", f"{raw!r} {exc}") from None
                environ[opt.env] = raw
            else:
                known = ", ".join([*sorted(_OPTIONS), *(f"[{s}]" for s in SECTIONS)])
                raise ConfigError(f"{source}", f"unknown key {key!r} (known: {known})")
        return cls(path, environ, sections)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _section(source: str, name: str, table: dict[str, Any]) -> dict[str, Any]:
    known = SECTIONS[name]
    for key, value in table.items():
        if key not in known:
            raise ConfigError(
                f"{source} [{name}]", f"unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
        if not isinstance(value, known[key]) or isinstance(value, bool):
            kind = getattr(known[key], "__name__", "value")
            raise ConfigError(f"{source} [{name}] {key}", f"{value!r} must be a {kind}")
    return dict(table)
