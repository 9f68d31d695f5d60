"""Results: JSON lines in, readable tables out (plain text for the terminal, markdown for docs)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(orjson.dumps(record) + b"\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object in ``path`` (lines that do not parse are skipped)."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "\N{EN DASH}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}" if isinstance(v, float) else str(v)
    return str(v)


def _lat(d: dict[str, Any], key: str = "lat_ms") -> str:
    lat = d.get(key) or {}
    return " / ".join(fmt(lat.get(k)) for k in ("p50", "p99", "max"))


def _limit(d: dict[str, Any]) -> str:
    b = d.get("bottleneck")
    if b == "none-reached":
        last = (d.get("steps") or [{}])[-1]
        return (
            f"not reached ({fmt(last.get('server_cpu_pct'), 0)} / "
            f"{fmt(last.get('gen_cpu_pct'), 0)})"
        )
    return (
        f"{b} ({fmt(d.get('server_cpu_pct_at_fail'), 0)} / {fmt(d.get('gen_cpu_pct_at_fail'), 0)})"
    )


def _label(d: dict[str, Any]) -> str:
    tags = [d.get("server_mode", "")]
    if d.get("quick"):
        tags.append("quick")
    return f"{d.get('scenario')} ({', '.join(t for t in tags if t)})"


FIXED_HEAD = (
    "scenario",
    "delivered msg/s",
    "latency p50 / p99 / max ms",
    "lost",
    "server CPU µs/msg",
    "server CPU %",
    "server RSS MB",
    "gen CPU %",
    "other CPU %",
)
SAT_HEAD = (
    "scenario",
    "peak delivered msg/s",
    "limited by (server / gen CPU %)",
    "highest offered msg/s passing the lag check",
    "server CPU µs/msg there",
    "server RSS MB",
)


def fixed_row(d: dict[str, Any]) -> list[str]:
    if not d.get("ok"):
        return [_label(d), f"ERROR: {d.get('error')}", *[""] * (len(FIXED_HEAD) - 2)]
    return [
        _label(d),
        fmt(d.get("delivered_per_s"), 0),
        _lat(d),
        f"{fmt(d.get('lost'))} of {fmt(d.get('expected'))}",
        fmt(d.get("server_cpu_us_per_msg")),
        fmt(d.get("server_cpu_pct")),
        fmt(d.get("server_rss_mb")),
        fmt(d.get("gen_cpu_pct")),
        fmt(d.get("other_cpu_pct")),
    ]


def sat_row(d: dict[str, Any]) -> list[str]:
    if not d.get("ok"):
        return [_label(d), f"ERROR: {d.get('error')}", *[""] * (len(SAT_HEAD) - 2)]
    peak = fmt(d.get("peak_arrived_per_s"), 0)
    return [
        _label(d),
        (">=" if d.get("bottleneck") == "none-reached" else "") + peak,
        _limit(d),
        fmt(d.get("max_sustained_dps"), 0),
        fmt(d.get("server_cpu_us_per_msg_at_best")),
        fmt(d.get("server_rss_mb")),
    ]


def tables(records: Iterable[dict[str, Any]]) -> list[tuple[Sequence[str], list[list[str]]]]:
    """(header, rows) for fixed-rate and saturation results, in the order given."""
    fixed: list[list[str]] = []
    sat: list[list[str]] = []
    for d in records:
        (sat if d.get("mode") == "sat" else fixed).append(
            sat_row(d) if d.get("mode") == "sat" else fixed_row(d)
        )
    out: list[tuple[Sequence[str], list[list[str]]]] = []
    if fixed:
        out.append((FIXED_HEAD, fixed))
    if sat:
        out.append((SAT_HEAD, sat))
    return out


def text_table(head: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(head), *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def markdown_table(head: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(records: Iterable[dict[str, Any]], markdown: bool = False) -> str:
    draw = markdown_table if markdown else text_table
    return "\n\n".join(draw(head, rows) for head, rows in tables(records))


def latest(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last result of each (scenario, server mode), in first-seen order."""
    by_key: dict[tuple[Any, Any], dict[str, Any]] = {}
    for d in records:
        by_key[(d.get("scenario"), d.get("server_mode"))] = d
    return list(by_key.values())


def update_section(path: Path, name: str, body: str) -> None:
    """Replace what sits between ``<!-- bench:NAME:begin -->`` and ``<!-- bench:NAME:end -->``
    in ``path`` (markers appended at the end if missing)."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)
