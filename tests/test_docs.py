"""The docs cannot drift from the code: every setting, error code and close code is documented."""

from __future__ import annotations

import subprocess
import sys

from pully_tornado import protocol
from pully_tornado.settings import OPTIONS

from .support import ROOT

WIRE_CODES = ["bad_request", "unknown_type", "invalid_channel", "too_large", "forbidden",
              "rate_limited", "function_failed", "unavailable", "internal"]  # fmt: skip


def test_readme_configuration_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    table = subprocess.run(
        [sys.executable, "scripts/config_table.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert table in readme, "regenerate it: .venv/bin/python scripts/config_table.py"
    for opt in OPTIONS:
        assert f"`{opt.env}`" in readme


def test_protocol_doc_names_every_error_and_close_code() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for code in WIRE_CODES:
        assert f"`{code}`" in doc, code
    closes = [v for k, v in vars(protocol).items() if k.startswith("CLOSE_")]
    for close in closes:
        assert f"| {close} |" in doc, close
    for command in protocol.COMMANDS:
        assert f'"type":"{command}"' in doc, command
