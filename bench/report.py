"""Results: JSON lines in, readable tables out (plain text for the terminal, markdown for docs)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from .scenarios import SCENARIOS


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


CHANNELS_HEAD = (
    "scenario",
    "server CPU µs/publish",
    "server CPU µs/msg",
    "p99 ms own / shared channel",
    "lost",
    "delivered msg/s",
    "server CPU %",
    "server RSS MB",
    "gen CPU %",
    "other CPU %",
)
CLUSTER_HEAD = (
    "scenario",
    "delivered msg/s",
    "latency p50 / p99 / max ms",
    "p99 ms local / remote node",
    "lost",
    "server CPU µs/msg (all nodes)",
    "server CPU % per node",
    "gen CPU %",
    "other CPU %",
)
CONNS_HEAD = (
    "scenario",
    "connected",
    "server RSS MB (0 → N)",
    "bytes/conn",
    "connect s (conns/s)",
    "broadcast lost / p99 / max ms",
    "idle server CPU %",
    "open files (server / gen)",
    "notes",
)


def _error_row(d: dict[str, Any], width: int) -> list[str]:
    return [_label(d), f"ERROR: {d.get('error')}", *[""] * (width - 2)]


def fixed_row(d: dict[str, Any]) -> list[str]:
    if not d.get("ok"):
        return _error_row(d, len(FIXED_HEAD))
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


def _p99(d: dict[str, Any], key: str) -> str:
    return fmt((d.get(key) or {}).get("p99"))


def channels_row(d: dict[str, Any]) -> list[str]:
    if not d.get("ok"):
        return _error_row(d, len(CHANNELS_HEAD))
    return [
        _label(d),
        fmt(d.get("server_cpu_us_per_publish")),
        fmt(d.get("server_cpu_us_per_msg")),
        f"{_p99(d, 'lat_ms_own')} / {_p99(d, 'lat_ms_shared')}",
        f"{fmt(d.get('lost'))} of {fmt(d.get('expected'))}",
        fmt(d.get("delivered_per_s"), 0),
        fmt(d.get("server_cpu_pct")),
        fmt(d.get("server_rss_mb")),
        fmt(d.get("gen_cpu_pct")),
        fmt(d.get("other_cpu_pct")),
    ]


def cluster_row(d: dict[str, Any]) -> list[str]:
    if not d.get("ok"):
        return _error_row(d, len(CLUSTER_HEAD))
    return [
        _label(d),
        fmt(d.get("delivered_per_s"), 0),
        _lat(d),
        f"{_p99(d, 'lat_ms_local')} / {_p99(d, 'lat_ms_remote')}",
        f"{fmt(d.get('lost'))} of {fmt(d.get('expected'))}",
        fmt(d.get("server_cpu_us_per_msg")),
        " / ".join(fmt(x) for x in d.get("server_nodes_cpu_pct") or []) or fmt(None),
        fmt(d.get("gen_cpu_pct")),
        fmt(d.get("other_cpu_pct")),
    ]


def conns_row(d: dict[str, Any]) -> list[str]:
    if d.get("subs") is None:  # nothing measured: the server or the generator did not start
        return _error_row(d, len(CONNS_HEAD))
    conn = d.get("connect") or {}
    broadcast = "\N{EN DASH}"
    if d.get("broadcast_ms") is not None:
        b = d["broadcast_ms"]
        broadcast = f"{fmt(d.get('lost'))} / {fmt(b.get('p99'))} / {fmt(b.get('max'))}"
    nofile = d.get("server_nofile") or [None]
    return [
        _label(d),
        f"{fmt(d.get('subs'))} of {fmt(d.get('requested'))}",
        f"{fmt(d.get('server_rss_mb_0'))} → {fmt(d.get('server_rss_mb_n'))}",
        fmt(d.get("bytes_per_conn")),
        f"{fmt((conn.get('ms') or 0) / 1000)} ({fmt(conn.get('per_s'), 0)})",
        broadcast,
        fmt(d.get("idle_server_cpu_pct")),
        f"{fmt(nofile[0])} / {fmt(d.get('gen_nofile'))}",
        _conns_note(d),
    ]


def _conns_note(d: dict[str, Any]) -> str:
    refused = " (open-files limit not raised)" if d.get("nofile_refused") else ""
    if d.get("ok"):
        return "ok" + refused
    if d.get("capped"):
        return f"target not reached: {fmt(d.get('tried'))} tried{refused}"
    return f"FAILED: {d.get('error')}"


def sat_row(d: dict[str, Any]) -> list[str]:
    if not d.get("ok"):
        return _error_row(d, len(SAT_HEAD))
    peak = fmt(d.get("peak_arrived_per_s"), 0)
    return [
        _label(d),
        (">=" if d.get("bottleneck") == "none-reached" else "") + peak,
        _limit(d),
        fmt(d.get("max_sustained_dps"), 0),
        fmt(d.get("server_cpu_us_per_msg_at_best")),
        fmt(d.get("server_rss_mb")),
    ]


TABLES: dict[str, tuple[Sequence[str], Callable[[dict[str, Any]], list[str]]]] = {
    "fixed": (FIXED_HEAD, fixed_row),
    "cluster": (CLUSTER_HEAD, cluster_row),
    "channels": (CHANNELS_HEAD, channels_row),
    "sat": (SAT_HEAD, sat_row),
    "conns": (CONNS_HEAD, conns_row),
}


def table_of(d: dict[str, Any]) -> str:
    """Which table a result goes in: by its kind and mode, or (for a result that carries
    neither: the server did not start) by what its scenario is."""
    kind, mode = d.get("kind"), d.get("mode")
    sc = SCENARIOS.get(str(d.get("scenario")))
    if kind is None and sc is not None:
        kind, mode = sc.kind, sc.mode
    if mode == "sat":
        return "sat"
    if kind in ("idle", "conns"):
        return "conns"
    if kind == "channels":
        return "channels"
    if d.get("lat_ms_local") is not None or (sc is not None and sc.nodes > 1):
        return "cluster"
    return "fixed"


def tables(records: Iterable[dict[str, Any]]) -> list[tuple[Sequence[str], list[list[str]]]]:
    """(header, rows) for each kind of result present, in the order of :data:`TABLES`; rows
    in the order given."""
    rows: dict[str, list[list[str]]] = {name: [] for name in TABLES}
    for d in records:
        name = table_of(d)
        rows[name].append(TABLES[name][1](d))
    return [(head, rows[name]) for name, (head, _) in TABLES.items() if rows[name]]


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
