"""The relationships document: schema, POST/GET /relationships, stores (file and S3 on moto
over real HTTP), cluster-wide reload, persistence across restarts."""

from __future__ import annotations

import asyncio
import fnmatch
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import tornado.httpclient
import tornado.ioloop
from moto.server import ThreadedMotoServer

from pully_tornado.errors import Unavailable
from pully_tornado.relationships import InvalidRelationships, load
from pully_tornado.relationships.file import FileStore
from pully_tornado.relationships.redis import RedisStore
from pully_tornado.relationships.s3 import S3Store
from pully_tornado.relationships.store import Store

from .conftest import LocalCluster, make_settings
from .support import PullyProcess, RedisServer, WSClient, eventually, free_port

VALID = {
    "channels": {"chat": ["profanity", "uppercase"], "orders:*": ["enrich"], "quiet": []},
    "functions": {"enrich": {"runtime": "lambda", "timeout": 2.0, "on_error": "reject"},
                  "hook": {"runtime": "http", "url": "https://example.com/hook"}},
}  # fmt: skip


ARN = "arn:aws:lambda:eu-west-1:1:function:x"

# -- schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [VALID, {"channels": {}}, {"channels": {"a": []}},
     {"channels": {"room/[ab]?=*": ["f_1-x"]}, "functions": {"f_1-x": {"on_error": "pass"}}},
     {"channels": {}, "functions": {"l": {"runtime": "lambda", "name": ARN}}}],
)  # fmt: skip
def test_valid_documents(doc: dict[str, Any]) -> None:
    assert load(doc).to_json()["channels"] == {k: list(v) for k, v in doc["channels"].items()}


@pytest.mark.parametrize(
    ("doc", "problems"),
    [
        ([], ["document: must be a JSON object with a 'channels' object"]),
        ({}, ["channels: Missing data for required field."]),
        ({"channels": [], "extra": 1},
         ["channels: Not a valid mapping type.", "extra: Unknown field."]),
        ({"channels": {"bad name!": ["f"]}}, ["channels.bad name!: not a channel name or glob"]),
        ({"channels": {"c": ["Upper", "ok", "ok", 7]}}, [
            "channels.c[0]: not a function name", "channels.c[2]: duplicate function 'ok'",
            "channels.c[3]: Not a valid string."]),
        ({"channels": {"c": "f"}}, ["channels.c: Not a valid list."]),
        ({"channels": {"c": [{}, ["f"], "g", "g"]}}, [  # found by schemathesis: was a 500
            "channels.c[0]: Not a valid string.", "channels.c[1]: Not a valid string.",
            "channels.c[3]: duplicate function 'g'"]),
        ({"channels": {}, "functions": {"f": {"runtime": "docker", "timeout": 0, "x": 1}}}, [
            "functions.f.runtime: Must be one of: local, lambda, http.",
            "functions.f.timeout: Must be greater than 0", "functions.f.x: Unknown field."]),
        ({"channels": {}, "functions": {"f": {"runtime": None}}},
         ["functions.f.runtime: Must be one of: local, lambda, http."]),
        ({"channels": {}, "functions": {"f": {"runtime": "http"}}},
         ["functions.f.url: required when runtime is http"]),
        ({"channels": {}, "functions": {"f": {"runtime": "http", "url": "ftp://x/y"}}},
         ["functions.f.url: not an http(s) URL"]),
        ({"channels": {}, "functions": {"f": {"runtime": "local", "url": "http://a", "name": "n"}}},
         ["functions.f.name: only used with runtime lambda",
          "functions.f.url: only used with runtime http"]),
        # a trailing newline slipped past ``re.match`` + ``$``; schemathesis found the URL one
        ({"channels": {"c\n": ["f\n"]}, "functions": {"g\n": {}, "h": {
            "runtime": "http", "url": "https://h:1/\u00a8\u001e"}}}, [
            "channels.c\n: not a channel name or glob", "channels.c\n[0]: not a function name",
            "functions.g\n: not a function name", "functions.h.url: not an http(s) URL"]),
        ({"channels": {}, "functions": {"f": {"timeout": 901}, "g": {"on_error": "ignore"}}}, [
            "functions.f.timeout: Must be greater than 0", "functions.g.on_error: Must be one of"]),
    ],
)  # fmt: skip
def test_invalid_documents_list_every_problem(doc: Any, problems: list[str]) -> None:
    with pytest.raises(InvalidRelationships) as info:
        load(doc)
    assert len(info.value.problems) == len(problems), info.value.problems
    for got, want in zip(info.value.problems, problems, strict=True):
        assert got.startswith(want), (got, want)


def test_pipeline_resolution_exact_then_longest_glob() -> None:
    rel = load({"channels": {"orders:*": ["a"], "orders:eu:*": ["b"], "orders:eu:vip": ["c"],
                             "*": ["d"], "empty": []}})  # fmt: skip
    assert rel.pipeline_for("orders:eu:vip") == ("c",)
    assert rel.pipeline_for("orders:eu:1") == ("b",)
    assert rel.pipeline_for("orders:us") == ("a",)
    assert rel.pipeline_for("other") == ("d",)
    assert rel.pipeline_for("empty") == ()
    more = load({"channels": {"*:audit": ["a"], "[ab]?": ["b"], "room:[0-9]*": ["c"], "*": ["d"],
                              "room:?": ["e"], "t-[!x]": ["f"], "*:*:audit": ["g"]}})  # fmt: skip
    assert more.pipeline_for("x:audit") == ("a",)  # ties: the first in the document
    assert more.pipeline_for("room:1:audit") == ("c",)  # the longest matching glob
    assert more.pipeline_for("bz") == ("b",)
    assert more.pipeline_for("room:a") == ("e",)
    assert (more.pipeline_for("t-y"), more.pipeline_for("t-x")) == (("f",), ("d",))


@pytest.mark.parametrize(
    ("key", "reason"),
    [("orders:[abc", "'[' at position 8 is never closed"),
     ("[!]", "'[!]' is empty: it matches no character"),
     ("[]", "'[]' is empty: it matches no character"),
     ("room:[z-a]", "'[z-a]' has the range 'z-a', which is reversed or mixes kinds"),
     ("[a-Z]", "'[a-Z]' has the range 'a-Z'"),
     ("[a*]", "'[a*]' holds '*', which no channel name contains"),
     ("[a-b-c]", "'[a-b-c]' puts '-' where it is neither a range nor the first or last"),
     ("a!b", "'!' cannot be in a channel name (only in a glob's [!...])"),
     ("a]", "']' cannot be in a channel name"),
     ("x" * 201, "must be 1-200 characters")],
)  # fmt: skip
def test_globs_that_can_never_match_are_refused(key: str, reason: str) -> None:
    with pytest.raises(InvalidRelationships) as info:
        load({"channels": {key: [], "fine:[a-c-]?[!-]*": []}})
    [problem] = info.value.problems
    assert problem.startswith(f"channels.{key}: not a channel name or glob: {reason}"), problem


def test_glob_matching_is_indexed_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """15,000 glob rules: a publish tests only the globs its channel could match, and a channel
    seen before tests none (a scan of every glob took 27 ms per publish)."""
    tested: list[str] = []
    fnmatchcase = fnmatch.fnmatchcase

    def counting(name: str, pattern: str) -> bool:
        tested.append(pattern)
        return fnmatchcase(name, pattern)

    monkeypatch.setattr(fnmatch, "fnmatchcase", counting)
    rules = {f"tenant:{i}:*": [f"t{i}"] for i in range(15_000)}
    rel = load({"channels": {**rules, "*:audit": ["audit"], "tenant:7:vip": ["vip"]}})
    assert rel.pipeline_for("tenant:12345:orders") == ("t12345",)
    assert len(tested) <= 3, tested  # tenant:12345:* (and tenant:1:*-style prefixes), not 15,000
    tested.clear()
    assert rel.pipeline_for("tenant:12345:orders") == ("t12345",)
    assert tested == []  # cached
    assert rel.pipeline_for("tenant:7:vip") == ("vip",) and tested == []  # exact: a dict
    assert rel.pipeline_for("tenant:99:audit") == ("t99",)  # longer than *:audit
    assert rel.pipeline_for("nobody:audit") == ("audit",)
    assert rel.pipeline_for("nobody") == ()
    assert len(tested) <= 6, tested


def test_the_match_cache_is_bounded() -> None:
    """Channel names are the clients' to choose: 100,000 distinct ones leave a bounded cache."""
    from pully_tornado.relationships.rules import CACHE_SIZE

    rel = load({"channels": {"room:*": ["r"], "*:x": ["x"]}, "options": {"room:*": {}}})
    for i in range(100_000):
        assert rel.pipeline_for(f"room:{i}") == ("r",)
        rel.options_for(f"room:{i}")
    assert rel._pipelines.cache_size() == CACHE_SIZE
    assert rel._options.cache_size() == CACHE_SIZE
    assert rel.pipeline_for("room:1") == ("r",) and rel.pipeline_for("a:x") == ("x",)


# -- stores -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "test")


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)


@pytest.fixture(params=["file", "s3", "redis"])
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, moto_server: str, aws_env: None
) -> Iterator[Callable[[], Store]]:
    if request.param == "file":
        yield lambda: FileStore(str(tmp_path / "rel.json"))
        return
    if request.param == "redis":
        server = request.getfixturevalue("cluster_redis")
        made: list[Store] = []

        def redis_store() -> Store:
            made.append(RedisStore(server.url))
            return made[-1]

        yield redis_store
        for store in made:
            tornado.ioloop.IOLoop.current().run_sync(store.close)
        return
    bucket = f"pully-{request.node.name.lower().replace('[', '-').replace(']', '')[:40]}"
    make_bucket(moto_server, bucket)
    settings = make_settings(aws_endpoint_url=moto_server)
    yield lambda: S3Store(bucket, "config/relationships.json", settings)


@pytest.mark.gen_test(timeout=30)
async def test_store_contract_versions_only_grow(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    assert await store.load() is None and await store.version() == 0
    first, second = load(VALID), load({"channels": {"x": ["y"]}})
    assert await store.save(first) == 1
    stored = await store.load()
    assert stored is not None and (stored.version, stored.relationships) == (1, first)
    assert await store.save(second) == 2 and await store.version() == 2
    assert await store.save(second) == 3  # the same document again is still a new version
    other = store_factory()  # another node, or process, on the same store
    assert await other.save(first) == 4
    final = await store.load()
    assert final is not None and (final.version, final.relationships) == (4, first)
    # a node running version 9 (the store lost its data meanwhile) saves above what it runs
    assert await other.save(second, above=9) == 10 and await store.version() == 10


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_file_saves_each_get_a_version(tmp_path: Path) -> None:
    stores = [FileStore(str(tmp_path / "rel.json")) for _ in range(3)]
    versions = await asyncio.gather(*(s.save(load(VALID)) for s in stores * 3))
    assert sorted(versions) == list(range(1, 10))


class _RacedS3Store(S3Store):
    """Another writer saves right after this store read the version it wants to replace."""

    def __init__(self, rival: S3Store, *args: Any) -> None:
        super().__init__(*args)
        self.rival, self.raced = rival, False

    async def _head(self) -> tuple[str, int] | None:
        head = await super()._head()
        if not self.raced:
            self.raced = True
            await self.rival.save(load({"channels": {"rival": []}}))
        return head


@pytest.mark.gen_test(timeout=30)
async def test_a_stale_s3_save_is_refused_and_retried_above_the_rival(
    moto_server: str, aws_env: None
) -> None:
    make_bucket(moto_server, "pully-race")
    settings = make_settings(aws_endpoint_url=moto_server)
    rival = S3Store("pully-race", "r.json", settings)
    assert await rival.save(load(VALID)) == 1
    raced = _RacedS3Store(rival, "pully-race", "r.json", settings)
    assert await raced.save(load({"channels": {"mine": []}})) == 3  # the rival took 2
    final = await rival.load()
    assert final is not None and (final.version, list(final.relationships.channels)) == (
        3,
        ["mine"],
    )


@pytest.mark.gen_test(timeout=30)
async def test_store_outage_is_unavailable(tmp_path: Path, aws_env: None) -> None:
    dead = S3Store(
        "pully-x", "r.json", make_settings(aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    )
    with pytest.raises(Unavailable):
        await dead.load()
    with pytest.raises(Unavailable):
        await dead.save(load(VALID))
    (tmp_path / "dir.json").mkdir()  # a path that cannot be read as a file
    with pytest.raises(Unavailable):
        await FileStore(str(tmp_path / "dir.json")).load()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(Unavailable) as info:
        await FileStore(str(broken)).load()
    assert "not a valid relationships document" in info.value.message


def test_a_hand_written_file_loads_as_version_1(tmp_path: Path) -> None:
    path = tmp_path / "relationships.json"
    path.write_text(orjson.dumps(VALID).decode())
    stored = tornado.ioloop.IOLoop().run_sync(FileStore(str(path)).load)
    assert stored is not None and stored.version == 1


# -- routes -----------------------------------------------------------------------------------


async def call(url: str, method: str = "GET", body: Any = None, **headers: str) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **headers}  # admin writes need it
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        url, method=method, body=raw, headers=headers, raise_error=False
    )
    return response.code, orjson.loads(response.body)


@pytest.mark.usefixtures("app", "http_server")
class TestRoutes:
    @pytest.fixture
    def engine(self) -> str:
        return "memory"

    @pytest.mark.gen_test
    async def test_both_body_forms_save_new_versions(self, base: str) -> None:
        status, body = await call(base + "/relationships")
        assert (status, body["version"], body["relationships"]) == (200, 0, {"channels": {}})
        status, body = await call(base + "/relationships", "POST",
                                  {"relationshipString": orjson.dumps(VALID).decode()})  # fmt: skip
        saved = {"status": 200, "message": "relationships saved as version 1", "error": [],
                 "version": 1}  # fmt: skip
        assert (status, body) == (200, saved)
        status, body = await call(base + "/relationships", "POST", {"channels": {"x": []}})
        assert (status, body["version"]) == (200, 2)
        status, body = await call(base + "/relationships")
        assert (body["version"], body["relationships"]) == (2, {"channels": {"x": []}})

    @pytest.mark.gen_test
    @pytest.mark.parametrize(
        ("body", "count"),
        [(b"{not json", 1), ({"relationshipString": 5}, 1),
         ({"relationshipString": "{}", "more": 1}, 1), ({"relationshipString": "[1]"}, 1),
         ({"channels": {"a b": ["X", "X"]}, "y": 1}, 5)],
    )  # fmt: skip
    async def test_invalid_is_400_with_every_problem_and_nothing_changes(
        self, base: str, body: Any, count: int
    ) -> None:
        await call(base + "/relationships", "POST", VALID)
        status, reply = await call(base + "/relationships", "POST", body)
        assert status == 400 and reply["status"] == 400
        assert len(reply["error"]) == count, reply
        assert all(set(e) == {"message"} and ": " in e["message"] for e in reply["error"])
        assert "invalid" in reply["message"]
        status, current = await call(base + "/relationships")
        assert (current["version"], current["relationships"]) == (1, load(VALID).to_json())

    @pytest.mark.gen_test
    async def test_invalid_globs_are_400_naming_each_key(self, base: str) -> None:
        await call(base + "/relationships", "POST", VALID)
        doc = {"channels": {"orders:[abc": ["f"], "[!]": [], "[]": [], "ok:[a-c]*": []},
               "options": {"room:[z-a]": {"history_size": 5}, "fine:*": {}}}  # fmt: skip
        status, reply = await call(base + "/relationships", "POST", doc)
        assert (status, reply["status"]) == (400, 400)
        keys = ["channels.[!]", "channels.[]", "channels.orders:[abc", "options.room:[z-a]"]
        assert [e["message"].split(": ")[0] for e in reply["error"]] == keys
        assert all("not a channel name or glob: " in e["message"] for e in reply["error"])
        status, current = await call(base + "/relationships")
        assert (current["version"], current["relationships"]) == (1, load(VALID).to_json())

    @pytest.mark.gen_test
    async def test_too_large_is_413(self, base: str) -> None:
        doc = {"channels": {f"c{i}": [f"f{j}" for j in range(20)] for i in range(8000)}}  # ~1 MB
        status, reply = await call(base + "/relationships", "POST", doc)
        assert (status, reply["status"], reply["code"]) == (413, 413, "too_large")
        assert (await call(base + "/relationships"))[1]["version"] == 0


@pytest.mark.usefixtures("app", "http_server")
class TestAdminToken:
    @pytest.fixture
    def engine(self) -> str:
        return "memory"

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"admin_token": "relationships-admin-token"}

    @pytest.mark.gen_test
    async def test_401_403_then_200(self, base: str) -> None:
        url = base + "/relationships"
        for method, body in (("GET", None), ("POST", VALID)):
            status, reply = await call(url, method, body)
            assert (status, reply["status"]) == (401, 401)
            status, reply = await call(url, method, body, Authorization="Bearer nope")
            assert (status, reply["status"]) == (403, 403)
            status, _ = await call(
                url, method, body, Authorization="Bearer relationships-admin-token"
            )
            assert status == 200


@pytest.mark.gen_test(timeout=60)
async def test_store_unreachable_is_503_and_nothing_changes(
    local_cluster: LocalCluster, aws_env: None
) -> None:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    endpoint = "http://{}:{}".format(*moto.get_host_and_port())
    make_bucket(endpoint, "pully-outage")
    node, url = await local_cluster.add(store="s3://pully-outage/r.json", aws_endpoint_url=endpoint)
    base = url.replace("ws://", "http://").removesuffix("/ws")
    assert (await call(base + "/relationships", "POST", VALID))[0] == 200
    moto.stop()
    status, reply = await call(base + "/relationships", "POST", {"channels": {}})
    assert (status, reply["status"], reply["code"]) == (503, 503, "unavailable")
    status, current = await call(base + "/relationships")
    assert (current["version"], current["relationships"]) == (1, load(VALID).to_json())
    assert node.relationships.version == 1


# -- cluster reload and restarts -------------------------------------------------------------


UPPER = "def handler(event, context):\n    return {'data': event['data'].upper()}\n"


@pytest.mark.gen_test(timeout=60)
async def test_a_save_on_one_node_reloads_every_node(
    local_cluster: LocalCluster,
    cluster_redis: RedisServer,
    moto_server: str,
    aws_env: None,
    tmp_path: Path,
) -> None:
    make_bucket(moto_server, "pully-cluster")
    (tmp_path / "functions" / "upper").mkdir(parents=True)
    (tmp_path / "functions" / "upper" / "handler.py").write_text(UPPER)
    shared = {"redis_url": cluster_redis.url, "store": "s3://pully-cluster/relationships.json",
              "aws_endpoint_url": moto_server}  # fmt: skip
    _, url_a = await local_cluster.add(**shared)
    node_b, url_b = await local_cluster.add(**shared)
    base_a = url_a.replace("ws://", "http://").removesuffix("/ws")
    client_b = await WSClient.connect(url_b)
    await client_b.subscribe("loud")
    status, body = await call(base_a + "/relationships", "POST", {"channels": {"loud": ["upper"]}})
    assert status == 200
    await eventually(lambda: node_b.relationships.version == body["version"], 10, "node B reloaded")
    await client_b.publish("loud", "through b")  # runs the new pipeline on node B
    assert (await client_b.messages(1))[0]["data"] == "THROUGH B"
    node_c, _ = await local_cluster.add(**shared)  # started later: loads the current version
    assert node_c.relationships.version == body["version"]
    assert node_c.relationships.current == load({"channels": {"loud": ["upper"]}})


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_relationships_and_functions_survive_a_restart(
    processes: Callable[..., PullyProcess], tmp_path: Path
) -> None:
    (tmp_path / "functions" / "upper").mkdir(parents=True)
    (tmp_path / "functions" / "upper" / "handler.py").write_text(textwrap.dedent(UPPER))
    node = processes()  # cwd tmp_path: ./relationships.json and ./functions, the defaults
    status, body = await call(node.url + "/relationships", "POST", {"channels": {"up": ["upper"]}})
    assert (status, body["version"]) == (200, 1)
    node.stop()
    assert orjson.loads((tmp_path / "relationships.json").read_bytes()) == {
        "channels": {"up": ["upper"]}
    }
    node.start()
    status, current = await call(node.url + "/relationships")
    assert (current["version"], current["relationships"]) == (1, {"channels": {"up": ["upper"]}})
    client = await WSClient.connect(node.ws_url)
    await client.subscribe("up")
    await client.publish("up", "again")
    assert (await client.messages(1))[0]["data"] == "AGAIN"
