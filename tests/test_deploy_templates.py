"""The pieces under ``pully deploy``: the ``ecs/`` templates and how placeholders are filled,
and the deterministic function zip (same code, same hash)."""

from __future__ import annotations

import json
import os
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from pully_tornado.deploy.aws import Aws
from pully_tornado.deploy.base import Outputs, StackConfig
from pully_tornado.deploy.errors import DeployError
from pully_tornado.deploy.package import build
from pully_tornado.deploy.stack import STEPS
from pully_tornado.deploy.templates import (
    CHECKOUT_TEMPLATES,
    FILES,
    find,
    fingerprint,
    load,
    placeholders,
    render,
)  # fmt: skip

from .support import ROOT


def known_placeholders() -> set[str]:
    config = StackConfig(stack="s", region="r", bucket="b", templates=ROOT / "ecs")
    return set(STEPS[0](config, Aws("r"), Outputs()).values())


@pytest.mark.parametrize("name", FILES)
def test_every_template_is_json_with_only_known_placeholders(name: str) -> None:
    template = load(ROOT / "ecs", name)
    assert placeholders(template) <= known_placeholders(), name
    assert CHECKOUT_TEMPLATES == ROOT / "ecs"


def test_render_keeps_the_type_of_a_whole_placeholder_and_drops_comments() -> None:
    template = {"_comment": "doc", "a": "${LIST}", "b": "x-${NUM}-y", "c": ["${NUM}", 3],
                "d": {"_comment": "x", "e": "${NUM}"}}  # fmt: skip
    out = render(template, {"LIST": ["s1", "s2"], "NUM": 4}, "t.json")
    assert out == {"a": ["s1", "s2"], "b": "x-4-y", "c": [4, 3], "d": {"e": 4}}
    with pytest.raises(DeployError, match=r"t\.json: unknown placeholder \$\{NOPE\}"):
        render({"a": "${NOPE}"}, {"NUM": 1}, "t.json")


def test_fingerprint_ignores_key_order() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_a_projects_own_ecs_folder_wins(tmp_path: Path) -> None:
    assert find(None, tmp_path) == ROOT / "ecs"
    own = tmp_path / "ecs"
    own.mkdir()
    for name in FILES:
        (own / name).write_text((ROOT / "ecs" / name).read_text())
    assert find(None, tmp_path) == own
    with pytest.raises(DeployError, match="no ECS templates in"):
        find(tmp_path / "nowhere", tmp_path)
    (own / "service.json").write_text("{")
    with pytest.raises(DeployError, match=r"service\.json: not valid JSON"):
        load(own, "service.json")


def write_function(folder: Path, files: dict[str, str], mode: int = 0o644) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def test_same_code_gives_the_same_zip_whatever_the_times_modes_and_litter(
    tmp_path: Path,
) -> None:
    files = {"handler.py": "def handler(e, c):\n    return e\n", "lib/util.py": "X = 1\n"}
    one, two = tmp_path / "one", tmp_path / "two"
    write_function(one, files)
    write_function(two, dict(reversed(files.items())), mode=0o755)
    os.utime(two / "handler.py", (1_000_000_000, 1_000_000_000))
    (two / "__pycache__").mkdir()
    (two / "__pycache__" / "handler.cpython-312.pyc").write_bytes(b"\0junk")
    (two / "lib" / "util.pyc").write_bytes(b"\0junk")
    a, b = build("f", one), build("f", two)
    assert a.data == b.data and a.sha256 == b.sha256
    with zipfile.ZipFile(BytesIO(a.data)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["handler.py", "lib/util.py"]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
        assert all(i.external_attr >> 16 == 0o100644 for i in infos)
    (two / "handler.py").write_text("def handler(e, c):\n    return None\n")
    assert build("f", two).sha256 != a.sha256


def test_the_task_definition_drains_before_ecs_kills_it() -> None:
    td = json.loads((ROOT / "ecs" / "task-definition.json").read_text())
    (container,) = td["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert float(env["PULLY_DRAIN_TIMEOUT"]) + 10 <= container["stopTimeout"] <= 120
    assert container["linuxParameters"]["initProcessEnabled"] is True
    lb = json.loads((ROOT / "ecs" / "load-balancer.json").read_text())
    idle = {a["Key"]: a["Value"] for a in lb["loadBalancerAttributes"]}
    assert int(idle["idle_timeout.timeout_seconds"]) >= 3600
