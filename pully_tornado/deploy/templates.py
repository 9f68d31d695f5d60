"""The JSON templates in ``ecs/`` and how ``pully deploy`` fills their placeholders.

A placeholder is ``${NAME}``. A string that is exactly one placeholder takes the value's own
type (``"${SUBNETS}"`` becomes a list, ``"${MAX_TASKS}"`` a number); a placeholder inside a
longer string is replaced by the value's text. Keys named ``_comment`` are documentation and
are dropped. An unknown placeholder is an error naming the file, never an empty string sent to
AWS.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .aws import DeployError

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
FILES = ("task-definition.json", "service.json", "load-balancer.json", "autoscaling.json")
CHECKOUT_TEMPLATES = Path(__file__).resolve().parents[2] / "ecs"


def find(explicit: Path | None, project: Path) -> Path:
    """The templates folder: ``explicit`` (``--templates``), else the project's ``ecs/``, else
    the one in the Pully checkout this package runs from. Raises :class:`DeployError`."""
    candidates = [explicit] if explicit else [project / "ecs", CHECKOUT_TEMPLATES]
    for folder in candidates:
        if folder is not None and all((folder / name).is_file() for name in FILES):
            return folder
    where = explicit or f"{project / 'ecs'} or {CHECKOUT_TEMPLATES}"
    raise DeployError(
        f"no ECS templates in {where} (need {', '.join(FILES)}): copy ecs/ from the Pully "
        "repository into your project, or pass --templates DIR"
    )


def load(folder: Path, name: str) -> Any:
    path = folder / name
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise DeployError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise DeployError(f"{path}: not valid JSON: {exc}") from None


def placeholders(template: Any) -> set[str]:
    """Every ``${NAME}`` used in ``template``."""
    if isinstance(template, str):
        return set(PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return {n for k, v in template.items() if k != "_comment" for n in placeholders(v)}
    if isinstance(template, list):
        return {n for v in template for n in placeholders(v)}
    return set()


def render(template: Any, values: Mapping[str, Any], source: str) -> Any:
    """``template`` with every placeholder filled from ``values``. Raises :class:`DeployError`
    naming ``source`` for a placeholder ``values`` lacks."""
    unknown = placeholders(template) - values.keys()
    if unknown:
        raise DeployError(
            f"{source}: unknown placeholder{'s' if len(unknown) > 1 else ''} "
            f"{', '.join('${' + n + '}' for n in sorted(unknown))} "
            f"(known: {', '.join(sorted(values))})"
        )
    return _fill(template, values)


def _fill(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items() if k != "_comment"}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    return node


def fingerprint(rendered: Any) -> str:
    """SHA-256 of the canonical JSON: stored as a tag, it tells whether a resource already
    matches its template without comparing AWS's normalized copy field by field."""
    canonical = json.dumps(rendered, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
