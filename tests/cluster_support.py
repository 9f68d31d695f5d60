"""A real Redis Cluster for tests: 3 masters and 3 replicas (redis-server processes on free
ports, each in its own directory, created with ``redis-cli --cluster create``), with the faults
a broker must survive: a master killed (its replica takes over), a manual failover, a slot moved
to another master; and what a client does meanwhile (publish, resubscribe until served)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from .support import WSClient, free_port, wait_for


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port <= 55535 and _free(port + 10000):
            return port


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tls_files(directory: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it, made with ``openssl`` in
    ``directory`` (ca.crt, server.crt, server.key); returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)  # fmt: skip

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=pully test CA")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    return directory


class ClusterNode:
    def __init__(self, directory: Path, port: int, tls: Path | None = None) -> None:
        self.directory = directory / str(port)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    def _port_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        files = ["--tls-cert-file", str(self.tls / "server.crt"),
                 "--tls-key-file", str(self.tls / "server.key"),
                 "--tls-ca-cert-file", str(self.tls / "ca.crt")]  # fmt: skip
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cluster", "yes",
                "--tls-replication", "yes", "--tls-auth-clients", "no", *files]  # fmt: skip

    def start(self) -> ClusterNode:
        self.proc = subprocess.Popen(
            ["redis-server", *self._port_args(), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "1000", "--cluster-announce-ip", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", "redis.log", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, 10, what=f"cluster node {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        if self.tls is not None:
            return redis.Redis(port=self.port, socket_timeout=5, ssl=True,
                               ssl_ca_certs=str(self.tls / "ca.crt"))  # fmt: skip
        return redis.Redis(port=self.port, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def role(self) -> str:
        return str(self.client().execute_command("ROLE")[0].decode())

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


class RedisCluster:
    def __init__(self, directory: Path, tls: bool = False) -> None:
        self.tls = tls_files(directory / "tls") if tls else None
        self.nodes = [ClusterNode(directory, _cluster_port(), self.tls) for _ in range(6)]

    @property
    def url(self) -> str:
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        tls = [] if self.tls is None else ["--tls", "--cacert", str(self.tls / "ca.crt")]
        subprocess.run(
            ["redis-cli", *tls, "--cluster", "create", *addresses, "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()
        return self

    def client(self) -> redis.RedisCluster:
        if self.tls is not None:
            ca = str(self.tls / "ca.crt")
            return redis.RedisCluster(
                host="127.0.0.1", port=self.nodes[0].port, ssl=True, ssl_ca_certs=ca,
                socket_timeout=5,
            )  # fmt: skip
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5)

    def alive(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.alive() if n.role() == "master"]

    def master_of(self, key: str) -> ClusterNode:
        slot = int(self.alive()[0].client().execute_command("CLUSTER", "KEYSLOT", key))
        for node in self.masters():
            for start, end, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end and _[0][1] == node.port:
                    return node
        raise AssertionError(f"no master serves slot {slot}")

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        for node in self.alive():
            role = node.client().execute_command("ROLE")
            if role[0] == b"slave" and int(role[2]) == master.port:
                return node
        raise AssertionError(f"{master.port} has no replica")

    def wait_healthy(self, timeout: float = 30) -> None:
        def healthy() -> bool:
            try:
                for node in self.alive():
                    info = node.client().execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info:
                        return False
                    if node.role() == "slave":
                        repl = node.client().info("replication")
                        if repl.get("master_link_status") != "up":
                            return False
                return len(self.masters()) == 3
            except redis.RedisError:
                return False

        wait_for(healthy, timeout, 0.2, "a healthy cluster")

    def failover(self, replica: ClusterNode) -> None:
        """Promote ``replica`` by hand (its master becomes its replica)."""
        replica.client().execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: replica.role() == "master", 20, 0.1, f"{replica.port} promoted")
        self.wait_healthy()

    def move_slot(self, key: str, to: ClusterNode) -> None:
        """Move ``key``'s slot, with its keys, to master ``to``."""
        source = self.master_of(key)
        slot = int(source.client().execute_command("CLUSTER", "KEYSLOT", key))
        src, dst = source.client(), to.client()
        src_id = src.execute_command("CLUSTER", "MYID").decode()
        dst_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
        for node in self.masters():
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_healthy()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@contextmanager
def redis_cluster(directory: Path, tls: bool = False) -> Iterator[RedisCluster]:
    cluster = RedisCluster(directory, tls)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def publish_when_up(client: WSClient, channel: str, data: object) -> dict[str, object]:
    for _ in range(100):
        reply = await client.publish(channel, data)
        if reply["type"] == "ack":
            return reply
        assert reply["code"] == "unavailable", reply
        await asyncio.sleep(0.2)
    raise AssertionError("publishes never came back")


async def resubscribe_when_up(
    client: WSClient, channel: str, since: dict[str, object]
) -> dict[str, object]:
    for _ in range(100):
        reply = await client.request({"type": "subscribe", "channel": channel, "since": since})
        if reply["type"] == "subscribed":
            return reply
        assert reply["code"] == "unavailable", reply
        await asyncio.sleep(0.2)
    raise AssertionError("subscribing never came back")
