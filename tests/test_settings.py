"""Settings: parsed once from environment and flags; a bad value names its variable."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pully_tornado import config_values as values
from pully_tornado.cli import main
from pully_tornado.deploy.options import DEPLOY_OPTIONS, DeploySettings
from pully_tornado.errors import ConfigError
from pully_tornado.settings import OPTIONS, Settings


def test_defaults_are_embedded_mode_on_8080() -> None:
    s = Settings.load(environ={})
    assert (s.port, s.host, s.redis_url, s.mode) == (8080, "0.0.0.0", None, "embedded")
    assert s.max_message_bytes == 64 * 1024 and s.max_frame_bytes == 1024 * 1024
    assert (s.history_size, s.history_ttl) == (500, 300.0)
    assert s.store == "" and s.store_url == "file://./relationships.json"
    assert s.functions_dir == "./functions"
    assert s.admin_token is None and s.jwt_secret is None
    assert s.node_id  # generated: hostname plus a random suffix
    assert Settings.load(environ={}).node_id != s.node_id


def test_environment_is_read_and_flags_win() -> None:
    env = {
        "PULLY_PORT": "9001",
        "PULLY_REDIS_URL": "redis://cache:6380/2",
        "PULLY_ALLOWED_ORIGINS": "https://a.example, https://*.b.example/",
        "PULLY_ADMIN_TOKEN": "t",
        "PULLY_NODE_ID": "n-1",
    }
    s = Settings.load(environ=env)
    assert (s.port, s.redis_url, s.mode, s.admin_token, s.node_id) == (
        9001,
        "redis://cache:6380/2",
        "cluster",
        "t",
        "n-1",
    )
    assert s.allowed_origins == ("https://a.example", "https://*.b.example")
    s = Settings.load(environ=env, overrides={"port": "9002", "redis_url": None})
    assert s.port == 9002 and s.redis_url == "redis://cache:6380/2"  # None: flag not given


def test_every_setting_is_a_field_with_a_variable_and_a_flag() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {o.field for o in OPTIONS} == fields
    for o in OPTIONS:
        assert o.env.startswith("PULLY_") or o.env == "AWS_REGION"
        assert o.flag.startswith("--") and o.help
        Settings.load(environ={o.env: o.default})  # every default parses


@pytest.mark.parametrize(
    ("env", "names", "says"),
    [
        ({"PULLY_PORT": "http"}, "PULLY_PORT", "integer"),
        ({"PULLY_PORT": "70000"}, "PULLY_PORT", "between 0 and 65535"),
        ({"PULLY_MAX_MESSAGE_BYTES": "12"}, "PULLY_MAX_MESSAGE_BYTES", "at least 64"),
        ({"PULLY_HISTORY_TTL": "-1"}, "PULLY_HISTORY_TTL", ">= 0"),
        ({"PULLY_HISTORY_TTL": "nan"}, "PULLY_HISTORY_TTL", ">= 0"),
        ({"PULLY_REDIS_URL": "http://x"}, "PULLY_REDIS_URL", "redis://"),
        ({"PULLY_REDIS_URL": "redis://"}, "PULLY_REDIS_URL", "host"),
        ({"PULLY_REDIS_URL": "redis://h:99999"}, "PULLY_REDIS_URL", "port"),
        ({"PULLY_REDIS_URL": "redis+cluster://h:7000/1"}, "PULLY_REDIS_URL", "database 0"),
        ({"PULLY_REDIS_URL": "redis+sentinel://h:26379"}, "PULLY_REDIS_URL", "name the master"),
        ({"PULLY_REDIS_TLS_CA": "/no/such/ca.pem"}, "PULLY_REDIS_TLS_CA", "cannot read"),
        ({"PULLY_REDIS_ACK_REPLICAS": "-1"}, "PULLY_REDIS_ACK_REPLICAS", "between 0 and 16"),
        ({"PULLY_STORE": "ftp://x"}, "PULLY_STORE", "s3://"),
        ({"PULLY_FUNCTIONS_RUNTIME": "docker"}, "PULLY_FUNCTIONS_RUNTIME", "local, lambda"),
        ({"PULLY_LOG_LEVEL": "loud"}, "PULLY_LOG_LEVEL", "one of"),
        ({"PULLY_UVLOOP": "maybe"}, "PULLY_UVLOOP", "true or false"),
        ({"PULLY_NODE_ID": "has space"}, "PULLY_NODE_ID", "1-64 chars"),
        ({"PULLY_JWT_SECRET": "short"}, "PULLY_JWT_SECRET", "at least 32 bytes"),
        ({"PULLY_PRESENCE_TTL": "0"}, "PULLY_PRESENCE_TTL", ">= 1"),
        ({"PULLY_PRESENCE_CHANNELS": "["}, "PULLY_PRESENCE_CHANNELS", "'[' at position 1 is never"),
        ({"PULLY_PRESENCE_CHANNELS": "presence:*,[]"}, "PULLY_PRESENCE_CHANNELS", "'[]' is empty"),
        ({"PULLY_PRESENCE_CHANNELS": "room lobby"}, "PULLY_PRESENCE_CHANNELS", "' ' cannot be"),
        ({"PULLY_ALLOWED_ORIGINS": "https://*.example.com,["}, "PULLY_ALLOWED_ORIGINS", "never"),
        ({"PULLY_ALLOWED_ORIGINS": "https://[!].example.com"}, "PULLY_ALLOWED_ORIGINS", "empty"),
        ({"PULLY_HOST": "256.1.1.1"}, "PULLY_HOST", "not an IP address or a host name"),
        ({"PULLY_HOST": "bad_host-.example"}, "PULLY_HOST", "not an IP address or a host name"),
        ({"PULLY_META_TTL": "60", "PULLY_HISTORY_TTL": "300"}, "PULLY_META_TTL", "at least"),
        (
            {"PULLY_PING_INTERVAL": "10", "PULLY_PING_TIMEOUT": "30"},
            "PULLY_PING_TIMEOUT",
            "at most",
        ),
        (
            {"PULLY_MAX_FRAME_BYTES": "2048", "PULLY_MAX_MESSAGE_BYTES": "4096"},
            "PULLY_MAX_FRAME_BYTES",
            "at least",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=env)
    assert info.value.source.endswith(names)
    assert says in str(info.value)
    assert str(info.value).startswith(f"invalid {info.value.source}: ")


def test_hosts_and_globs_that_are_fine_pass_as_given() -> None:
    for host in ("", "0.0.0.0", "127.0.0.1", "::", "::1", "localhost", "redis_1", "pully.local."):
        assert Settings.load(environ={"PULLY_HOST": host}).host == host
    s = Settings.load(
        environ={"PULLY_PRESENCE_CHANNELS": "presence:*, room:[a-c]?, [!x]*",
                 "PULLY_ALLOWED_ORIGINS": "https://app.example.com/, https://*.example.com"}
    )  # fmt: skip
    assert s.presence_channels == ("presence:*", "room:[a-c]?", "[!x]*")
    assert s.allowed_origins == ("https://app.example.com", "https://*.example.com")


def test_a_bad_flag_names_flag_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={}, overrides={"port": "x"})
    assert info.value.source == "--port / PULLY_PORT"


def test_settings_are_frozen() -> None:
    s = Settings.load(environ={})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_field_defaults_are_the_parsed_option_defaults() -> None:
    fields = Settings.__dataclass_fields__
    for o in OPTIONS:
        if o.field != "node_id":  # "" asks __post_init__ for a generated id
            assert getattr(Settings(), o.field) == o.parse(o.default) == fields[o.field].default


def test_a_default_written_on_a_field_fails_the_import() -> None:
    class Stray:
        __annotations__ = {o.field: "str" for o in OPTIONS}

    for o in OPTIONS:
        setattr(Stray, o.field, values.FROM_OPTIONS)
    Stray.port = 8080  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"Stray\.port: its default belongs in its option"):
        values.defaults_from(OPTIONS)(Stray)
    Stray.__annotations__ = {"extra": "str"}
    with pytest.raises(TypeError, match="differ"):
        values.defaults_from(OPTIONS)(Stray)


def test_deploy_only_settings_are_not_the_nodes() -> None:
    assert not {o.field for o in DEPLOY_OPTIONS} & set(Settings.__dataclass_fields__)
    assert DeploySettings() == DeploySettings.load(environ={}) == DeploySettings("pully", None)
    d = DeploySettings.load(environ={"PULLY_STACK": "chat"}, overrides={"lambda_role": "arn:r"})
    assert (d.stack, d.lambda_role) == ("chat", "arn:r")
    result = CliRunner().invoke(main, ["serve", "--stack", "chat"])
    assert result.exit_code == 2 and "No such option '--stack'" in result.output
