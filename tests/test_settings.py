"""Unit tests for operations.settings.Settings.from_env."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from operations.amqp.queues import QueueType
from operations.errors import OperationsError, SettingsError
from operations.pacco.ordermaking import OrderMakingSaga
from operations.settings import DEFAULT_MESSAGES_FILE, DEV_JWT_SECRET, Settings


def bad(variable: str, value: str) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    error = caught.value
    assert error.variable == variable
    assert variable in str(error)
    assert error.code == "invalid_setting"
    assert isinstance(error, OperationsError)
    return error


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 5005
    assert settings.operation_ttl_seconds == 86_400
    assert settings.anonymous_reads is False
    assert settings.messages_file == DEFAULT_MESSAGES_FILE
    assert settings.messages_file.is_file()
    assert settings.messages_file.name == "pacco-messages.json"
    assert settings.amqp_url.startswith("amqp://")
    assert settings.redis_url.startswith("redis://")
    assert settings.jwt_secret == DEV_JWT_SECRET
    assert settings.jwt_issuer is None
    assert settings.jwt_audience is None
    assert settings.queue == "operations"
    assert settings.dead_letter_queue == "operations.dead-letter"
    assert settings.log_level == "INFO"
    assert settings == Settings()


def test_blank_values_fall_back_to_the_defaults() -> None:
    settings = Settings.from_env({"OPERATIONS_PORT": "   ", "OPERATIONS_ANONYMOUS_READS": ""})
    assert settings.port == 5005
    assert settings.anonymous_reads is False


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"PORT": "1", "OPERATIONS_UNKNOWN": "x"}) == Settings()


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATIONS_PORT", "6123")
    monkeypatch.setenv("OPERATIONS_QUEUE", "from-process-env")
    settings = Settings.from_env()
    assert settings.port == 6123
    assert settings.queue == "from-process-env"


def test_good_overrides_parse(tmp_path: Path) -> None:
    messages = tmp_path / "messages.json"
    messages.write_text('{"s": {"exchange": "x", "commands": ["do_it"]}}', encoding="utf-8")
    settings = Settings.from_env(
        {
            "OPERATIONS_AMQP_URL": "amqps://user:pw@rabbit.example:5671/vhost",
            "OPERATIONS_REDIS_URL": "rediss://cache.example:6380/2",
            "OPERATIONS_JWT_SECRET": "a-secret-of-thirty-two-bytes-or-more",
            "OPERATIONS_JWT_ISSUER": "pacco",
            "OPERATIONS_JWT_AUDIENCE": "operations",
            "OPERATIONS_HOST": "0.0.0.0",
            "OPERATIONS_PORT": " 8080 ",
            "OPERATIONS_MESSAGES_FILE": str(messages),
            "OPERATIONS_QUEUE": "ops",
            "OPERATIONS_OPERATION_TTL_SECONDS": "60",
            "OPERATIONS_ANONYMOUS_READS": "yes",
            "OPERATIONS_PREFETCH": "16",
            "OPERATIONS_BATCH_SIZE": "8",
            "OPERATIONS_AMQP_BULK_FRAMES": "off",
            "OPERATIONS_MAX_MESSAGE_BYTES": "1024",
            "OPERATIONS_STREAM_MAX_LENGTH": "1000",
            "OPERATIONS_KEY_PREFIX": "ops-test",
            "OPERATIONS_LOG_LEVEL": "debug",
        }
    )
    assert settings == Settings(
        amqp_url="amqps://user:pw@rabbit.example:5671/vhost",
        redis_url="rediss://cache.example:6380/2",
        jwt_secret="a-secret-of-thirty-two-bytes-or-more",
        jwt_issuer="pacco",
        jwt_audience="operations",
        host="0.0.0.0",
        port=8080,
        messages_file=messages,
        queue="ops",
        operation_ttl_seconds=60,
        anonymous_reads=True,
        prefetch=16,
        batch_size=8,
        amqp_bulk_frames=False,
        max_message_bytes=1024,
        stream_max_length=1000,
        key_prefix="ops-test",
        log_level="DEBUG",
    )
    assert settings.dead_letter_queue == "ops.dead-letter"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("False", False),
        ("Yes", True),
        ("on", True),
        ("off", False),
    ],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"OPERATIONS_ANONYMOUS_READS": raw}).anonymous_reads is expected


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "unix:///run/redis.sock"])
def test_redis_url_schemes(url: str) -> None:
    assert Settings.from_env({"OPERATIONS_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("port", ["0", "1", "65535"])
def test_port_bounds_are_accepted(port: str) -> None:
    assert Settings.from_env({"OPERATIONS_PORT": port}).port == int(port)


@pytest.mark.parametrize("level", ["DEBUG", "info", "Warning", "error", "CRITICAL"])
def test_log_levels_are_upper_cased(level: str) -> None:
    assert Settings.from_env({"OPERATIONS_LOG_LEVEL": level}).log_level == level.upper()


def test_secret_of_exactly_thirty_two_bytes_is_accepted() -> None:
    assert Settings.from_env({"OPERATIONS_JWT_SECRET": "s" * 32}).jwt_secret == "s" * 32


JWKS = "https://id.example/realms/pacco/protocol/openid-connect/certs"


def test_without_a_jwks_url_an_unset_secret_is_the_development_secret() -> None:
    settings = Settings.from_env({})
    assert settings.jwt_secret == DEV_JWT_SECRET and settings.uses_development_secret
    assert settings.jwt_jwks_url is None and settings.jwt_role_claim == "role"


def test_with_a_jwks_url_an_unset_secret_is_none() -> None:
    """The public development secret never sits beside an identity provider: HS256 is off."""
    settings = Settings.from_env({"OPERATIONS_JWT_JWKS_URL": JWKS})
    assert settings.jwt_jwks_url == JWKS
    assert settings.jwt_secret is None and not settings.uses_development_secret
    with pytest.raises(SettingsError, match="OPERATIONS_JWT_SECRET"):
        settings.signing_secret()


def test_with_a_jwks_url_a_set_secret_is_kept() -> None:
    secret = "a-secret-of-thirty-two-bytes-or-more"
    settings = Settings.from_env({"OPERATIONS_JWT_JWKS_URL": JWKS, "OPERATIONS_JWT_SECRET": secret})
    assert settings.jwt_secret == settings.signing_secret() == secret


def test_the_development_secret_is_refused_beside_a_jwks_url() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"OPERATIONS_JWT_JWKS_URL": JWKS, "OPERATIONS_JWT_SECRET": DEV_JWT_SECRET}
        )
    assert caught.value.variable == "OPERATIONS_JWT_SECRET"
    assert DEV_JWT_SECRET not in str(caught.value)


@pytest.mark.parametrize("url", ["ftp://id.example/certs", "id.example/certs", "https://", "x"])
def test_a_bad_jwks_url_is_refused(url: str) -> None:
    bad("OPERATIONS_JWT_JWKS_URL", url)


@pytest.mark.parametrize(
    "path",
    ["role", "realm_access.roles", "resource_access.operations.roles", "cognito:groups"],
)
def test_role_claim_paths_parse(path: str) -> None:
    assert Settings.from_env({"OPERATIONS_JWT_ROLE_CLAIM": path}).jwt_role_claim == path


@pytest.mark.parametrize("path", ["realm_access.", ".roles", "a..b", "realm access"])
def test_bad_role_claim_paths_are_refused(path: str) -> None:
    bad("OPERATIONS_JWT_ROLE_CLAIM", path)


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["65536", "-1", "100000"])
def test_port_out_of_range(value: str) -> None:
    error = bad("OPERATIONS_PORT", value)
    assert "between" in str(error)
    assert value in str(error)


@pytest.mark.parametrize("value", ["http", "50x5", "5005.0", "five", "0x10"])
def test_port_not_a_number(value: str) -> None:
    error = bad("OPERATIONS_PORT", value)
    assert "whole number" in str(error)


@pytest.mark.parametrize("value", ["maybe", "2", "y", "enabled", "truthy"])
def test_bad_boolean(value: str) -> None:
    error = bad("OPERATIONS_ANONYMOUS_READS", value)
    assert "true or false" in str(error)
    assert "true or false" in str(bad("OPERATIONS_AMQP_BULK_FRAMES", value))


def test_bulk_frames_are_on_unless_turned_off() -> None:
    assert Settings.from_env({}).amqp_bulk_frames is True
    assert Settings.from_env({"OPERATIONS_AMQP_BULK_FRAMES": "yes"}).amqp_bulk_frames is True
    assert Settings.from_env({"OPERATIONS_AMQP_BULK_FRAMES": "0"}).amqp_bulk_frames is False


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:5672/", "redis://127.0.0.1:6379/0", "127.0.0.1:5672", "rabbit"]
)
def test_bad_amqp_url_scheme(value: str) -> None:
    error = bad("OPERATIONS_AMQP_URL", value)
    assert "amqp" in error.reason


@pytest.mark.parametrize("value", ["amqp://127.0.0.1/", "http://cache:6379", "cache:6379"])
def test_bad_redis_url_scheme(value: str) -> None:
    error = bad("OPERATIONS_REDIS_URL", value)
    assert "redis" in error.reason


def test_missing_messages_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    error = bad("OPERATIONS_MESSAGES_FILE", str(missing))
    assert "existing file" in str(error)


def test_messages_file_that_is_a_directory(tmp_path: Path) -> None:
    bad("OPERATIONS_MESSAGES_FILE", str(tmp_path))


@pytest.mark.parametrize(
    "secret", ["short-secret", "x", "fifteen-chars!!", "thirty-one-bytes-is-still-short"]
)
def test_too_short_secret_is_refused_without_showing_it(secret: str) -> None:
    error = bad("OPERATIONS_JWT_SECRET", secret)
    assert "32" in str(error)
    assert secret not in str(error)
    assert secret not in error.reason
    assert secret not in repr(error)
    assert all(secret not in str(arg) for arg in error.args)


@pytest.mark.parametrize("value", ["0", "-5", "forever", "315360001"])
def test_bad_ttl(value: str) -> None:
    bad("OPERATIONS_OPERATION_TTL_SECONDS", value)


@pytest.mark.parametrize("value", ["TRACE", "verbose", "WARN", "10"])
def test_bad_log_level(value: str) -> None:
    error = bad("OPERATIONS_LOG_LEVEL", value)
    assert "DEBUG" in str(error)


@pytest.mark.parametrize("value", ["amq.operations", "q" * 201])
def test_bad_queue_name(value: str) -> None:
    bad("OPERATIONS_QUEUE", value)


@pytest.mark.parametrize("value", ["ops{1}", "ops prefix", "{ops"])
def test_bad_key_prefix(value: str) -> None:
    bad("OPERATIONS_KEY_PREFIX", value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OPERATIONS_PREFETCH", "1"),
        ("OPERATIONS_BATCH_SIZE", "0"),
        ("OPERATIONS_MAX_MESSAGE_BYTES", "63"),
        ("OPERATIONS_STREAM_MAX_LENGTH", "99"),
        ("OPERATIONS_REDIS_SHARDS", "0"),
    ],
)
def test_integers_below_their_minimum(variable: str, value: str) -> None:
    bad(variable, value)


def test_the_first_bad_variable_is_named_even_with_good_ones_around() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"OPERATIONS_PORT": "8080", "OPERATIONS_LOG_LEVEL": "loud"})
    assert caught.value.variable == "OPERATIONS_LOG_LEVEL"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OPERATIONS_AMQP_URL", "amqs://ops:hunter2-password@rabbit.example:5671/"),
        ("OPERATIONS_REDIS_URL", "redi://:hunter2-password@cache.example:6379/0"),
    ],
)
def test_bad_url_does_not_show_its_password(variable: str, value: str) -> None:
    """A URL carries credentials; like the JWT secret, they must not reach the logs."""
    error = bad(variable, value)
    assert "hunter2-password" not in str(error)


def test_shards_default_to_one_and_to_sixteen_on_a_cluster() -> None:
    assert Settings.from_env({}).redis_shards == 1
    assert not Settings.from_env({}).redis_cluster
    cluster = Settings.from_env({"OPERATIONS_REDIS_CLUSTER": "true"})
    assert cluster.redis_cluster and cluster.redis_shards == 16
    chosen = {"OPERATIONS_REDIS_CLUSTER": "yes", "OPERATIONS_REDIS_SHARDS": "48"}
    assert Settings.from_env(chosen).redis_shards == 48
    assert Settings.from_env({"OPERATIONS_REDIS_SHARDS": "3"}).redis_shards == 3


@pytest.mark.parametrize("value", ["1025", "-2", "many", "2.5"])
def test_bad_shard_count(value: str) -> None:
    error = bad("OPERATIONS_REDIS_SHARDS", value)
    assert "OPERATIONS_REDIS_SHARDS" in str(error)


def test_a_cluster_is_not_reached_over_a_unix_socket() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"OPERATIONS_REDIS_CLUSTER": "true", "OPERATIONS_REDIS_URL": "unix:///run/redis.sock"}
        )
    assert caught.value.variable == "OPERATIONS_REDIS_CLUSTER"


# ------------------------------------------------------------------------------------ the sagas


def test_saga_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.sagas is True
    assert settings.saga_queue == "operations.sagas"
    assert settings.saga_ttl_seconds == 86_400
    assert settings.saga_types == ("operations.pacco.ordermaking:OrderMakingSaga",)
    assert settings.saga_early_retries == 5
    assert settings.saga_retry_delay_ms == 1_000
    assert settings.saga_tombstone_seconds == 7 * 86_400
    assert settings.sweep_seconds == 15


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("OPERATIONS_SAGAS", "false", "sagas", False),
        ("OPERATIONS_SAGAS", "ON", "sagas", True),
        ("OPERATIONS_SAGA_QUEUE", "orders.sagas", "saga_queue_name", "orders.sagas"),
        ("OPERATIONS_SAGA_TTL_SECONDS", "1", "saga_ttl_seconds", 1),
        ("OPERATIONS_SAGA_TTL_SECONDS", "315360000", "saga_ttl_seconds", 315_360_000),
        ("OPERATIONS_SAGA_TYPES", " a.b:C , d:E,", "saga_types", ("a.b:C", "d:E")),
        ("OPERATIONS_SAGA_EARLY_RETRIES", "0", "saga_early_retries", 0),
        ("OPERATIONS_SAGA_EARLY_RETRIES", "1000", "saga_early_retries", 1_000),
        ("OPERATIONS_SAGA_RETRY_DELAY_MS", "1", "saga_retry_delay_ms", 1),
        ("OPERATIONS_SAGA_RETRY_DELAY_MS", "3600000", "saga_retry_delay_ms", 3_600_000),
        ("OPERATIONS_SAGA_TOMBSTONE_SECONDS", "0", "saga_tombstone_seconds", 0),
        ("OPERATIONS_SAGA_TOMBSTONE_SECONDS", "315360000", "saga_tombstone_seconds", 315_360_000),
        ("OPERATIONS_SWEEP_SECONDS", "1", "sweep_seconds", 1),
        ("OPERATIONS_SWEEP_SECONDS", "3600", "sweep_seconds", 3_600),
    ],
)
def test_good_saga_values(variable: str, value: str, field: str, expected: object) -> None:
    settings = Settings.from_env({variable: value})
    assert getattr(settings, field) == expected
    changed: dict[str, Any] = {field: expected}
    assert settings == replace(Settings(), **changed)  # and nothing else moves


@pytest.mark.parametrize(("value", "expected"), [(None, 120), (" 1 ", 1), ("2592000", 2_592_000)])
def test_the_order_maker_reads_its_own_deadline(value: str | None, expected: int) -> None:
    environ = {} if value is None else {"OPERATIONS_SAGA_DEADLINE_SECONDS": value}
    assert OrderMakingSaga.configure(environ).deadline_seconds == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be between 1 and 2592000"),
        ("2592001", "must be between 1 and 2592000"),
        ("1.5", "must be a whole number"),
    ],
)
def test_a_bad_order_maker_deadline_names_the_variable(value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        OrderMakingSaga.configure({"OPERATIONS_SAGA_DEADLINE_SECONDS": value})
    assert caught.value.variable == "OPERATIONS_SAGA_DEADLINE_SECONDS"
    assert reason in str(caught.value)


def test_the_saga_queue_follows_the_main_queue_unless_set() -> None:
    assert Settings.from_env({"OPERATIONS_QUEUE": "ops"}).saga_queue == "ops.sagas"
    both = {"OPERATIONS_QUEUE": "ops", "OPERATIONS_SAGA_QUEUE": "s"}
    assert Settings.from_env(both).saga_queue == "s"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("OPERATIONS_SAGAS", "maybe", "must be true or false"),
        ("OPERATIONS_SAGA_QUEUE", "amq.sagas", "must not start with 'amq.'"),
        ("OPERATIONS_SAGA_QUEUE", "q" * 201, "at most 200 bytes"),
        ("OPERATIONS_SAGA_TTL_SECONDS", "0", "must be between 1 and 315360000"),
        ("OPERATIONS_SAGA_TTL_SECONDS", "315360001", "must be between 1 and 315360000"),
        ("OPERATIONS_SAGA_TTL_SECONDS", "a day", "must be a whole number"),
        ("OPERATIONS_SAGA_TYPES", " , ", "must name at least one saga type"),
        ("OPERATIONS_SAGA_EARLY_RETRIES", "-1", "must be between 0 and 1000"),
        ("OPERATIONS_SAGA_EARLY_RETRIES", "1001", "must be between 0 and 1000"),
        ("OPERATIONS_SAGA_EARLY_RETRIES", "five", "must be a whole number"),
        ("OPERATIONS_SAGA_RETRY_DELAY_MS", "0", "must be between 1 and 3600000"),
        ("OPERATIONS_SAGA_RETRY_DELAY_MS", "3600001", "must be between 1 and 3600000"),
        ("OPERATIONS_SAGA_RETRY_DELAY_MS", "1s", "must be a whole number"),
        ("OPERATIONS_SAGA_TOMBSTONE_SECONDS", "-1", "must be between 0 and 315360000"),
        ("OPERATIONS_SAGA_TOMBSTONE_SECONDS", "a week", "must be a whole number"),
        ("OPERATIONS_SWEEP_SECONDS", "0", "must be between 1 and 3600"),
        ("OPERATIONS_SWEEP_SECONDS", "3601", "must be between 1 and 3600"),
    ],
)
def test_bad_saga_values_name_the_variable(variable: str, value: str, reason: str) -> None:
    error = bad(variable, value)
    assert reason in str(error)


def test_queues_are_classic_unless_quorum_is_asked_for() -> None:
    settings = Settings.from_env({})
    assert settings.queue_type is QueueType.CLASSIC
    assert settings.queue_delivery_limit == 20
    assert settings.queue_arguments.consumed("operations.dead-letter") == {}
    quorum = Settings.from_env(
        {"OPERATIONS_QUEUE_TYPE": "Quorum", "OPERATIONS_QUEUE_DELIVERY_LIMIT": "3"}
    )
    assert quorum.queue_type is QueueType.QUORUM
    assert quorum.queue_delivery_limit == 3
    assert quorum.queue_arguments.consumed("operations.dead-letter") == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "operations.dead-letter",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": 3,
    }
    assert quorum.queue_arguments.plain() == {"x-queue-type": "quorum"}
    assert quorum.queue_arguments.retry("operations.sagas")["x-dead-letter-routing-key"] == (
        "operations.sagas"
    )
    assert Settings.from_env({"OPERATIONS_QUEUE_TYPE": "classic"}) == Settings()


@pytest.mark.parametrize("value", ["stream", "quorum-queue", "1", "classic,quorum"])
def test_bad_queue_type(value: str) -> None:
    error = bad("OPERATIONS_QUEUE_TYPE", value)
    assert "must be classic or quorum" in str(error)


@pytest.mark.parametrize("value", ["0", "-1", "1000001", "twenty"])
def test_bad_delivery_limit(value: str) -> None:
    bad("OPERATIONS_QUEUE_DELIVERY_LIMIT", value)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 86_400), (" 1 ", 1), ("2592000", 2_592_000)]
)
def test_idempotency_keys_are_kept_a_day_unless_set(value: str | None, expected: int) -> None:
    environ = {} if value is None else {"OPERATIONS_IDEMPOTENCY_SECONDS": value}
    settings = Settings.from_env(environ)
    assert settings.idempotency_seconds == expected
    assert settings == replace(Settings(), idempotency_seconds=expected)  # nothing else moves


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be between 1 and 2592000"),
        ("-1", "must be between 1 and 2592000"),
        ("2592001", "must be between 1 and 2592000"),
        ("1.5", "must be a whole number"),
        ("a day", "must be a whole number"),
    ],
)
def test_idempotency_seconds_outside_their_bounds_are_refused(value: str, reason: str) -> None:
    error = bad("OPERATIONS_IDEMPOTENCY_SECONDS", value)
    assert reason in str(error)


def test_saga_objectives_parse_by_type_and_by_step() -> None:
    settings = Settings.from_env(
        {"OPERATIONS_SAGA_OBJECTIVES": " order_making=30 , order_making.order_approved=120.5,"}
    )
    assert settings.saga_objectives == (
        ("order_making", 30.0),
        ("order_making.order_approved", 120.5),
    )
    assert Settings.from_env({}).saga_objectives == ()
    assert Settings.from_env({}).saga_retry_window_seconds == 30


@pytest.mark.parametrize(
    "value", ["order_making", "order_making=", "=30", "order_making=0", "a b=3", "x=soon", "x=1e9"]
)
def test_bad_saga_objectives(value: str) -> None:
    bad("OPERATIONS_SAGA_OBJECTIVES", value)


@pytest.mark.parametrize("value", ["0", "86401", "soon"])
def test_bad_saga_retry_window(value: str) -> None:
    bad("OPERATIONS_SAGA_RETRY_WINDOW_SECONDS", value)
