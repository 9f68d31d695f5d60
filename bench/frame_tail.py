"""Who builds the ``message`` frame on Redis: the publish script, or every receiving node?

Wave 1's publish script appended the offset and epoch to the head the publishing node built
(``protocol.message_head``), stored that frame in history and published it, so every node
handed the received bytes to ``on_publication`` as they were. Since wave 2 the script stores
and publishes the data (``p<offset> <epoch>\\n<data>``) and each receiving node builds the
frame with ``protocol.message`` (docs/performance.md, "Who builds the message frame", has the
figures that decided it). ``python -m bench.frame_tail`` measures both sides of that trade,
rebuilding wave 1's script from today's (``lua_frame_script``):

(a) Redis CPU per publish, in a throwaway ``redis-server`` on a free port, with N subscriber
    connections (one per node of a cluster of N) reading every publication. Two scripts are
    loaded: the broker's own publish script, and the same text with only the frame line changed
    so that it stores and publishes ``ARGV[1]`` (the data) as is. Each runs with ``EVALSHA`` on
    one channel, pipelined in batches, with the arguments ``RedisBroker.publish`` passes
    (default history size and TTLs), in rounds that alternate between the scripts and which
    goes first. Two figures per round: ``usec_per_call`` of ``evalsha`` in ``INFO commandstats``
    (the script's run, including the ``PUBLISH`` into the subscribers' output buffers), and
    the redis-server's CPU time per publish from ``/proc/<pid>/task/*/schedstat`` (everything:
    reading and parsing the commands, the script, writing to the subscribers, the replies).
(b) Python CPU per publication per receiving node: what the subscriber link does with a
    pub/sub message today (split the head, hand over the frame) against the same plus
    ``protocol.message(channel, data, offset, epoch)``, on the exact messages the two scripts
    published in (a); alternating loops of 20,000 calls.

Each figure is printed as the best round of each side and as the median over rounds of the
paired difference (compact minus Lua-built frame), which a busy machine disturbs less.
``--control`` adds a third script, the compact one that still builds the frame in Lua and
drops it: if it costs what the current one does, the difference is the building itself.

The net per publication for clusters of 1 and 3 nodes weighs the node CPU the compact form would
add (N x the difference in b) against the Redis CPU it would save (a). Takes about 25 s (35 s
with ``--control``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import selectors
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis

import pully_tornado.broker
from pully_tornado import protocol
from pully_tornado.broker.base import new_epoch
from pully_tornado.broker.redis_scripts import parse_publication
from pully_tornado.settings import Settings

from .procs import RedisProcess

CHANNEL = "chat"
BATCH = 500  # EVALSHAs written back to back, then their replies read
TIMEOUT_S = 30.0
FRAME_LINE = "local frame = ARGV[1] .. offset .. ',\"epoch\":\"' .. epoch .. '\"}'"


def broker_publish_script() -> str:
    """The Redis broker's publish script, wherever ``pully_tornado.broker`` keeps it: a
    ``Scripts`` class (``Scripts().publish.body``) or a ``PUBLISH_LUA`` string. Modules whose
    optional libraries are missing are skipped."""
    package = pully_tornado.broker
    names = [f"{package.__name__}.redis_scripts", f"{package.__name__}.redis"]
    names += [i.name for i in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        scripts = getattr(module, "Scripts", None)
        if scripts is not None:
            return str(scripts().publish.body.decode())
        script = getattr(module, "PUBLISH_LUA", None)
        if isinstance(script, str):
            return script
    raise SystemExit("no publish script found in pully_tornado.broker: update bench/frame_tail.py")


# Today's script (compact): the lines that store and publish the data, and the line after
# which wave 1's built the frame.
STORE_DATA = "offset .. '-0', 'p', ARGV[1])"
PUBLISH_DATA = "'p' .. offset .. ' ' .. epoch .. '\\n' .. ARGV[1])"
AFTER_OFFSET = "if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[4]) end"


def compact_script(script: str) -> str:
    """Today's script, checked to be the one these edits understand."""
    for line in (STORE_DATA, PUBLISH_DATA, AFTER_OFFSET):
        if script.count(line) != 1:
            raise SystemExit(f"the publish script changed ({line!r}): update bench/frame_tail.py")
    return script


def lua_frame_script(script: str) -> str:
    """Wave 1's script: builds the frame from the head in ``ARGV[1]``, stores and publishes it."""
    return (
        compact_script(script)
        .replace(AFTER_OFFSET, f"{AFTER_OFFSET}\n{FRAME_LINE}")
        .replace(STORE_DATA, "offset .. '-0', 'd', frame)")
        .replace(PUBLISH_DATA, "offset .. ' ' .. epoch .. '\\n' .. frame)")
    )


def control_script(script: str) -> str:
    """The compact script that still builds the frame, and drops it (``--control``): what
    building the Lua string costs by itself."""
    built = FRAME_LINE.replace("local frame", "local unused")
    return compact_script(script).replace(AFTER_OFFSET, f"{AFTER_OFFSET}\n{built}")


def command(*args: bytes | str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class Link:
    """A blocking RESP connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.reader = hiredis.Reader()

    def replies(self, count: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < count:
            reply = self.reader.gets()
            if reply is False:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise SystemExit("redis closed the connection")
                self.reader.feed(chunk)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise SystemExit(f"redis: {reply}")
            out.append(reply)
        return out

    def call(self, *args: bytes | str) -> Any:
        self.sock.sendall(command(*args))
        return self.replies(1)[0]


class Subscribers:
    """``count`` subscriber connections to one pub/sub channel, read by one thread that keeps
    the number of messages each received and the last one."""

    def __init__(self, port: int, pubsub: str, count: int) -> None:
        self.links = [Link(port) for _ in range(count)]
        for link in self.links:
            link.call("SUBSCRIBE", pubsub)
        self.received = [0] * count
        self.last: list[bytes] = [b""] * count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with selectors.DefaultSelector() as sel:
            for i, link in enumerate(self.links):
                link.sock.setblocking(False)
                sel.register(link.sock, selectors.EVENT_READ, i)
            while not self._stop.is_set():
                for key, _ in sel.select(0.05):
                    i = key.data
                    link = self.links[i]
                    try:
                        link.reader.feed(link.sock.recv(1 << 20))
                    except BlockingIOError:
                        continue
                    while (reply := link.reader.gets()) is not False:
                        self.received[i] += 1
                        self.last[i] = reply[2]

    def wait_for(self, total: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while min(self.received) < total:
            if time.monotonic() > deadline:
                raise SystemExit(f"subscribers got {self.received} of {total} publications")
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for link in self.links:
            link.sock.close()


def redis_cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of every thread of ``pid`` so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


@dataclass
class RedisCost:
    usec_per_call: float  # INFO commandstats, evalsha
    cpu_us: float  # redis-server CPU per publish, from /proc


def publish_round(
    redis: RedisProcess, link: Link, subs: Subscribers, sha: str, first_arg: bytes, count: int
) -> RedisCost:
    """``count`` publishes (a multiple of ``BATCH``) with the script ``sha``; cost per publish.
    The arguments are those ``publish`` passes, the last being the master's replication id
    (scripts from before the epoch check on failover ignore it)."""
    info = link.call("INFO", "replication").decode()
    replid = next(x for x in info.splitlines() if x.startswith("master_replid:")).split(":")[1]
    settings = Settings()
    keys = (f"pully:meta:{{{CHANNEL}}}", f"pully:hist:{{{CHANNEL}}}")
    args = (
        str(int(settings.meta_ttl)), str(settings.history_size),
        str(max(1, int(settings.history_ttl))),
    )  # fmt: skip
    pubsub = f"pully:ch:{{{CHANNEL}}}"
    batch = b"".join(
        command("EVALSHA", sha, "2", *keys, first_arg, new_epoch(), pubsub, *args, replid)
        for _ in range(BATCH)
    )
    start_received = min(subs.received)
    link.call("CONFIG", "RESETSTAT")
    cpu = redis_cpu_ns(redis.pid)
    for _ in range(count // BATCH):
        link.sock.sendall(batch)
        link.replies(BATCH)
    subs.wait_for(start_received + count)
    cpu = redis_cpu_ns(redis.pid) - cpu
    stats = link.call("INFO", "commandstats").decode()
    line = next(x for x in stats.splitlines() if x.startswith("cmdstat_evalsha:"))
    fields = dict(f.split("=") for f in line.split(":", 1)[1].split(","))
    return RedisCost(float(fields["usec_per_call"]), cpu / count / 1e3)


def measure_redis(
    nodes: int, data: bytes, count: int, rounds: int, control: bool
) -> tuple[dict[str, list[RedisCost]], dict[str, bytes]]:
    """Each script's Redis cost per publish, round by round, with ``nodes`` subscribers; and
    the last pub/sub message each one published."""
    with tempfile.TemporaryDirectory(prefix="pully-frame-tail-") as tmp:
        redis = RedisProcess(Path(tmp)).start()
        try:
            link = Link(redis.port)
            current = broker_publish_script()
            scripts = {"lua-frame": lua_frame_script(current), "compact": compact_script(current)}
            head = protocol.message_head(CHANNEL, data)
            first_args = {"lua-frame": head, "compact": data}
            if control:
                scripts["control"], first_args["control"] = control_script(current), head
            shas = {
                name: link.call("SCRIPT", "LOAD", body).decode() for name, body in scripts.items()
            }
            subs = Subscribers(redis.port, f"pully:ch:{{{CHANNEL}}}", nodes)
            costs: dict[str, list[RedisCost]] = {name: [] for name in shas}
            last: dict[str, bytes] = {}
            try:
                for name, sha in shas.items():  # warm-up
                    publish_round(redis, link, subs, sha, first_args[name], BATCH * 4)
                for i in range(rounds):  # alternating which script goes first
                    for name, sha in sorted(shas.items(), reverse=bool(i % 2)):
                        costs[name].append(
                            publish_round(redis, link, subs, sha, first_args[name], count)
                        )
                        last[name] = subs.last[0]
            finally:
                subs.close()
                link.sock.close()
        finally:
            redis.stop()
    return costs, last


# -- (b) the receiving node ----------------------------------------------------------------------


class Events:
    """``BrokerEvents.on_publication`` doing nothing, as the node's would after this point."""

    def on_publication(self, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        pass


def receive_frame(events: Events, channel: str, raw: bytes) -> None:
    """What wave 1's subscriber link did with a publication: the frame is ready."""
    head, _, frame = raw.partition(b"\n")
    offset, _, epoch = head.partition(b" ")
    events.on_publication(channel, int(offset), epoch.decode(), frame)


def receive_compact(events: Events, channel: str, raw: bytes) -> None:
    """What the subscriber link does today: build the frame from the compact form."""
    publication = parse_publication(channel, raw)
    assert publication is not None
    events.on_publication(channel, *publication)


def time_receive(last: dict[str, bytes], loops: int, repeats: int) -> dict[str, list[float]]:
    """Microseconds per publication of each way to receive, timed in alternation."""
    events = Events()
    ways = {"lua-frame": receive_frame, "compact": receive_compact}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, receive in ways.items():
            raw = last[name]
            start = time.perf_counter()
            for _ in range(loops):
                receive(events, CHANNEL, raw)
            times[name].append((time.perf_counter() - start) / loops * 1e6)
    return times


def check_messages(last: dict[str, bytes], data: bytes) -> None:
    """The scripts published what they should: the frame ``protocol.message`` builds, and the
    data as is."""
    for name in ("lua-frame", "compact"):
        head, _, body = last[name].partition(b"\n")
        offset, _, epoch = head.removeprefix(b"p").partition(b" ")
        frame = protocol.message(CHANNEL, data, int(offset), epoch.decode())
        if body != (frame if name == "lua-frame" else data):
            raise SystemExit(f"{name}: unexpected publication {last[name][:200]!r}")


def paired(values: dict[str, list[float]], name: str = "compact") -> float:
    """Median over rounds of ``name`` minus Lua-built frame (rounds ran side by side)."""
    return statistics.median(c - f for c, f in zip(values[name], values["lua-frame"], strict=True))


def report(nodes: int, costs: dict[str, list[RedisCost]], py: dict[str, list[float]]) -> None:
    call = {name: [c.usec_per_call for c in rounds] for name, rounds in costs.items()}
    cpu = {name: [c.cpu_us for c in rounds] for name, rounds in costs.items()}
    print(f"  {nodes} node(s), Redis µs per publish: evalsha usec_per_call; redis-server CPU")
    for name, label in (("lua-frame", "Lua-built frame"), ("compact", "compact")):
        print(f"    {label:16} best {min(call[name]):6.2f}; {min(cpu[name]):6.2f}")
    print(f"    compact - Lua    {paired(call):+6.2f}; {paired(cpu):+6.2f} (median, paired rounds)")
    if "control" in costs:
        print(
            f"    control - Lua    {paired(call, 'control'):+6.2f}; {paired(cpu, 'control'):+6.2f} "
            "(compact, but building the frame in Lua and dropping it)"
        )
    node = paired(py)
    print(
        f"  node µs per publication: frame ready {min(py['lua-frame']):.2f}, "
        f"built from compact {min(py['compact']):.2f} (best); compact - ready {node:+.2f}"
    )
    print(
        f"  => compact form per publication: Redis CPU {paired(cpu):+.2f} µs, "
        f"nodes {nodes} x {node:+.2f} = {nodes * node:+.2f} µs, "
        f"cluster CPU net {paired(cpu) + nodes * node:+.2f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.frame_tail", description=__doc__)
    parser.add_argument("--sizes", default="100,4000", help="data sizes in bytes, comma-separated")
    parser.add_argument("--nodes", default="1,3", help="cluster sizes, comma-separated")
    parser.add_argument(
        "--publishes", type=int, default=4 * BATCH, help=f"EVALSHAs per round ({BATCH}s)"
    )
    parser.add_argument("--rounds", type=int, default=20, help="rounds per script")
    parser.add_argument(
        "--control", action="store_true", help="also run the compact script that builds the frame"
    )
    args = parser.parse_args()
    if args.publishes <= 0 or args.publishes % BATCH:
        parser.error(f"--publishes must be a positive multiple of {BATCH}")
    sizes = [int(x) for x in args.sizes.split(",")]
    clusters = [int(x) for x in args.nodes.split(",")]
    print(f"{args.rounds} rounds of {args.publishes} publishes per script, one channel")
    for size in sizes:
        data = b'{"text":"%s"}' % (b"x" * max(0, size - 11))
        print(f"data of {len(data)} bytes:")
        for nodes in clusters:
            costs, last = measure_redis(nodes, data, args.publishes, args.rounds, args.control)
            check_messages(last, data)
            report(nodes, costs, time_receive(last, 20_000, args.rounds))


if __name__ == "__main__":
    main()
