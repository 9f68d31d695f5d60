"""The docs cannot drift from the code: every setting, error code and close code is documented."""

from __future__ import annotations

import subprocess
import sys

from pully_tornado import errors, protocol
from pully_tornado.errors import HTTP_ONLY, PullyError
from pully_tornado.settings import OPTIONS

from .support import ROOT

WIRE_CODES = ["bad_request", "unknown_type", "invalid_channel", "too_large", "forbidden",
              "rate_limited", "function_failed", "unavailable", "internal"]  # fmt: skip


def error_codes() -> set[str]:
    """The wire codes of the exception tree (``unauthorized`` and ``unsupported_media_type``
    are HTTP only: 401, 415)."""
    # the classes errors.py defines, not every subclass imported so far (the CLI's DeployError
    # is never on the wire)
    return {
        value.code
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, PullyError) and value not in HTTP_ONLY
    }


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
    for code in [*WIRE_CODES, *(e.code for e in HTTP_ONLY), "not_found", "method_not_allowed"]:
        assert f"`{code}`" in doc, code
    assert error_codes() == set(WIRE_CODES), "a wire code came or went: document it"
    closes = [v for k, v in vars(protocol).items() if k.startswith("CLOSE_")]
    assert {1012, 4001, 4008, 4029} <= set(closes), closes  # found the close codes
    for close in closes:
        assert f"| {close} |" in doc, close
    for command in protocol.COMMANDS:
        assert f'"type":"{command}"' in doc, command
