"""Settings, read once from ``OPERATIONS_*`` environment variables.

A bad value stops start-up with a :class:`SettingsError` that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from operations.amqp.queues import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_MAX_ATTEMPTS,
    QueueArguments,
    QueueType,
)
from operations.errors import SettingsError
from operations.setting_values import (
    Reader,
    boolean,
    choice,
    existing_file,
    gc_thresholds,
    import_paths,
    integer,
    jwks_url,
    key_prefix,
    log_level,
    objectives,
    origins,
    queue_name,
    queue_type,
    read_setting,
    url_of,
    whole_number,
)
from operations.store.shards import MAX_SHARDS

__all__ = ["Settings", "read_setting", "whole_number"]

T = TypeVar("T")

# Pacco's catalogue lies beside its sample saga; a path only: settings import nothing of the sample.
DEFAULT_MESSAGES_FILE = Path(str(resources.files("operations") / "pacco" / "pacco-messages.json"))
DEV_JWT_SECRET = "operations-development-secret-change-me"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash
CLUSTER_SHARDS = 16
DEFAULT_SAGA_TYPES = ("operations.pacco.ordermaking:OrderMakingSaga",)


@dataclass(frozen=True)
class Settings:
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_shards_count: int | None = None  # None: 1 on one server, 16 on a cluster
    # None: HS256 is refused. Unset in the environment, it is DEV_JWT_SECRET without a JWKS URL
    # and None with one: the public development secret never sits beside an identity provider.
    jwt_secret: str | None = DEV_JWT_SECRET
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_role_claim: str = "role"
    host: str = "127.0.0.1"
    port: int = 5005
    messages_file: Path = DEFAULT_MESSAGES_FILE
    queue: str = "operations"
    queue_type: QueueType = QueueType.CLASSIC
    queue_delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    operation_ttl_seconds: int = 86_400
    sweep_seconds: int = 15
    anonymous_reads: bool = False
    prefetch: int = 512
    batch_size: int = 256
    amqp_bulk_frames: bool = True
    max_message_bytes: int = 262_144
    stream_max_length: int = 100_000
    max_history: int = 1_000
    key_prefix: str = "operations"
    log_level: str = "INFO"
    log_format: str = "auto"
    allowed_origins: tuple[str, ...] = ()
    sagas: bool = True
    saga_queue_name: str | None = None
    saga_ttl_seconds: int = 86_400
    saga_tombstone_seconds: int = 7 * 86_400
    saga_types: tuple[str, ...] = DEFAULT_SAGA_TYPES
    saga_early_retries: int = 5
    saga_retry_delay_ms: int = 1_000
    # Per-step objectives over those the saga types declare (sagas/objectives.py), and how long
    # a retry of a saga's waiting step holds it against repeats (sagas/retries.py).
    saga_objectives: tuple[tuple[str, float], ...] = ()
    saga_retry_window_seconds: int = 30
    dead_letter_keep: bool = True
    dead_letter_max_count: int = 10_000
    dead_letter_max_age_seconds: int = 7 * 86_400
    dead_letter_max_body_bytes: int = 65_536
    trace_http_parent: str = "continue"
    # Shares of Redis: the shared pool, and what long-polls and Prefer: wait may take of it.
    redis_pool_size: int = 100
    wait_reads: int = 16
    max_waits_per_user: int = 50
    max_sockets_per_user: int = 20
    # permessage-deflate on WebSockets: a compressor and a decompressor per connection.
    ws_compression: bool = False
    # The cycle collector's thresholds in `operations serve` (see operations/garbage.py).
    gc_thresholds: tuple[int, int, int] = (50_000, 20, 10)
    recovery_max_entries: int = 10_000
    # No message can stall a queue: attempts at one that keeps failing, and the saga data cap.
    max_delivery_attempts: int = DEFAULT_MAX_ATTEMPTS
    saga_max_data_bytes: int = 65_536
    # How long an Idempotency-Key of a saga start is kept (sagas/idempotency.py).
    idempotency_seconds: int = 86_400

    @property
    def redis_shards(self) -> int:
        if self.redis_shards_count is not None:
            return self.redis_shards_count
        return CLUSTER_SHARDS if self.redis_cluster else 1

    @property
    def uses_development_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    def signing_secret(self) -> str:
        """The HS256 secret, for the commands that mint tokens; a SettingsError without one."""
        if self.jwt_secret is None:
            raise SettingsError(
                "OPERATIONS_JWT_SECRET",
                "is not set, so no token can be minted here; with OPERATIONS_JWT_JWKS_URL set,"
                " tokens come from the identity provider",
            )
        return self.jwt_secret

    @property
    def saga_queue(self) -> str:
        return self.saga_queue_name or f"{self.queue}.sagas"

    @property
    def queue_arguments(self) -> QueueArguments:
        return QueueArguments(self.queue_type, self.queue_delivery_limit)

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead-letter"

    @property
    def dead_letter_queues(self) -> tuple[str, ...]:
        """Every dead-letter queue the service fills: the tracking queue's, and the saga
        queue's when the sagas run."""
        if not self.sagas:
            return (self.dead_letter_queue,)
        return (self.dead_letter_queue, f"{self.saga_queue}.dead-letter")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = Reader(env)
        defaults = cls()
        settings = cls(
            amqp_url=reader.get("OPERATIONS_AMQP_URL", defaults.amqp_url, url_of("amqp", "amqps")),
            redis_url=reader.get(
                "OPERATIONS_REDIS_URL", defaults.redis_url, url_of("redis", "rediss", "unix")
            ),
            redis_cluster=reader.get("OPERATIONS_REDIS_CLUSTER", defaults.redis_cluster, boolean),
            redis_shards_count=reader.get("OPERATIONS_REDIS_SHARDS", None, integer(1, MAX_SHARDS)),
            jwt_secret=_jwt_secret(reader),
            jwt_issuer=reader.get("OPERATIONS_JWT_ISSUER", None, _text),
            jwt_audience=reader.get("OPERATIONS_JWT_AUDIENCE", None, _text),
            jwt_jwks_url=reader.get("OPERATIONS_JWT_JWKS_URL", None, jwks_url),
            jwt_role_claim=reader.get(
                "OPERATIONS_JWT_ROLE_CLAIM", defaults.jwt_role_claim, _claim_path
            ),
            host=reader.get("OPERATIONS_HOST", defaults.host, _text),
            port=reader.get("OPERATIONS_PORT", defaults.port, integer(0, 65_535)),
            messages_file=reader.get(
                "OPERATIONS_MESSAGES_FILE", defaults.messages_file, existing_file
            ),
            queue=reader.get("OPERATIONS_QUEUE", defaults.queue, queue_name),
            queue_type=reader.get("OPERATIONS_QUEUE_TYPE", defaults.queue_type, queue_type),
            queue_delivery_limit=reader.get(
                "OPERATIONS_QUEUE_DELIVERY_LIMIT",
                defaults.queue_delivery_limit,
                integer(1, 1_000_000),
            ),
            operation_ttl_seconds=reader.get(
                "OPERATIONS_OPERATION_TTL_SECONDS",
                defaults.operation_ttl_seconds,
                integer(1, 10 * 365 * 86_400),
            ),
            sweep_seconds=reader.get(
                "OPERATIONS_SWEEP_SECONDS", defaults.sweep_seconds, integer(1, 3_600)
            ),
            anonymous_reads=reader.get(
                "OPERATIONS_ANONYMOUS_READS", defaults.anonymous_reads, boolean
            ),
            prefetch=reader.get("OPERATIONS_PREFETCH", defaults.prefetch, integer(2, 65_535)),
            batch_size=reader.get("OPERATIONS_BATCH_SIZE", defaults.batch_size, integer(1, 10_000)),
            amqp_bulk_frames=reader.get(
                "OPERATIONS_AMQP_BULK_FRAMES", defaults.amqp_bulk_frames, boolean
            ),
            max_message_bytes=reader.get(
                "OPERATIONS_MAX_MESSAGE_BYTES", defaults.max_message_bytes, integer(64, 1 << 27)
            ),
            stream_max_length=reader.get(
                "OPERATIONS_STREAM_MAX_LENGTH", defaults.stream_max_length, integer(100, 1 << 30)
            ),
            max_history=reader.get(
                "OPERATIONS_MAX_HISTORY", defaults.max_history, integer(1, 1_000_000)
            ),
            key_prefix=reader.get("OPERATIONS_KEY_PREFIX", defaults.key_prefix, key_prefix),
            log_level=reader.get("OPERATIONS_LOG_LEVEL", defaults.log_level, log_level),
            log_format=reader.get(
                "OPERATIONS_LOG_FORMAT", defaults.log_format, choice("auto", "text", "json")
            ),
            allowed_origins=reader.get("OPERATIONS_ALLOWED_ORIGINS", (), origins),
            trace_http_parent=reader.get(
                "OPERATIONS_TRACE_HTTP_PARENT",
                defaults.trace_http_parent,
                choice("continue", "link"),
            ),
            sagas=reader.get("OPERATIONS_SAGAS", defaults.sagas, boolean),
            saga_queue_name=reader.get("OPERATIONS_SAGA_QUEUE", None, queue_name),
            saga_ttl_seconds=reader.get(
                "OPERATIONS_SAGA_TTL_SECONDS",
                defaults.saga_ttl_seconds,
                integer(1, 10 * 365 * 86_400),
            ),
            saga_tombstone_seconds=reader.get(
                "OPERATIONS_SAGA_TOMBSTONE_SECONDS",
                defaults.saga_tombstone_seconds,
                integer(0, 10 * 365 * 86_400),
            ),
            saga_types=reader.get("OPERATIONS_SAGA_TYPES", defaults.saga_types, import_paths),
            saga_early_retries=reader.get(
                "OPERATIONS_SAGA_EARLY_RETRIES", defaults.saga_early_retries, integer(0, 1_000)
            ),
            saga_retry_delay_ms=reader.get(
                "OPERATIONS_SAGA_RETRY_DELAY_MS",
                defaults.saga_retry_delay_ms,
                integer(1, 3_600_000),
            ),
            saga_objectives=reader.get("OPERATIONS_SAGA_OBJECTIVES", (), objectives),
            saga_retry_window_seconds=reader.get(
                "OPERATIONS_SAGA_RETRY_WINDOW_SECONDS",
                defaults.saga_retry_window_seconds,
                integer(1, 86_400),
            ),
            dead_letter_keep=reader.get(
                "OPERATIONS_DEAD_LETTER_KEEP", defaults.dead_letter_keep, boolean
            ),
            dead_letter_max_count=reader.get(
                "OPERATIONS_DEAD_LETTER_MAX_COUNT",
                defaults.dead_letter_max_count,
                integer(1, 10_000_000),
            ),
            dead_letter_max_age_seconds=reader.get(
                "OPERATIONS_DEAD_LETTER_MAX_AGE_SECONDS",
                defaults.dead_letter_max_age_seconds,
                integer(60, 10 * 365 * 86_400),
            ),
            dead_letter_max_body_bytes=reader.get(
                "OPERATIONS_DEAD_LETTER_MAX_BODY_BYTES",
                defaults.dead_letter_max_body_bytes,
                integer(64, 1 << 27),
            ),
            redis_pool_size=reader.get(
                "OPERATIONS_REDIS_POOL_SIZE", defaults.redis_pool_size, integer(4, 10_000)
            ),
            wait_reads=reader.get("OPERATIONS_WAIT_READS", defaults.wait_reads, integer(1, 1_000)),
            max_waits_per_user=reader.get(
                "OPERATIONS_MAX_WAITS_PER_USER", defaults.max_waits_per_user, integer(1, 100_000)
            ),
            max_sockets_per_user=reader.get(
                "OPERATIONS_MAX_SOCKETS_PER_USER",
                defaults.max_sockets_per_user,
                integer(1, 1_000_000),
            ),
            ws_compression=reader.get(
                "OPERATIONS_WS_COMPRESSION", defaults.ws_compression, boolean
            ),
            gc_thresholds=reader.get(
                "OPERATIONS_GC_THRESHOLDS", defaults.gc_thresholds, gc_thresholds
            ),
            recovery_max_entries=reader.get(
                "OPERATIONS_RECOVERY_MAX_ENTRIES",
                defaults.recovery_max_entries,
                integer(1, 1 << 30),
            ),
            max_delivery_attempts=reader.get(
                "OPERATIONS_MAX_DELIVERY_ATTEMPTS",
                defaults.max_delivery_attempts,
                integer(1, 1_000),
            ),
            saga_max_data_bytes=reader.get(
                "OPERATIONS_SAGA_MAX_DATA_BYTES",
                defaults.saga_max_data_bytes,
                integer(1_024, 1 << 27),
            ),
            idempotency_seconds=reader.get(
                "OPERATIONS_IDEMPOTENCY_SECONDS",
                defaults.idempotency_seconds,
                integer(1, 30 * 86_400),
            ),
        )
        if settings.wait_reads >= settings.redis_pool_size:
            raise SettingsError(
                "OPERATIONS_WAIT_READS",
                f"must be less than OPERATIONS_REDIS_POOL_SIZE ({settings.redis_pool_size}), so"
                " that waiting readers always leave connections to the rest",
            )
        if settings.redis_cluster and urlsplit(settings.redis_url).scheme == "unix":
            raise SettingsError(
                "OPERATIONS_REDIS_CLUSTER", "a Redis Cluster is reached over TCP, not a unix socket"
            )
        return settings


def _text(raw: str) -> str:
    return raw


def _jwt_secret(reader: Reader) -> str | None:
    """The rule for the HS256 secret: set, it is used (the development secret itself is refused
    beside a JWKS URL); unset, it is the development secret, unless a JWKS URL is set, and then
    there is none and HS256 tokens are refused."""
    jwks_url = reader.get("OPERATIONS_JWT_JWKS_URL", None, _text)
    secret = reader.get("OPERATIONS_JWT_SECRET", None, _secret)
    if secret == DEV_JWT_SECRET and jwks_url is not None:
        raise SettingsError(
            "OPERATIONS_JWT_SECRET",
            "the public development secret cannot be used beside OPERATIONS_JWT_JWKS_URL",
        )
    if secret is None and jwks_url is None:
        return DEV_JWT_SECRET
    return secret


def _secret(raw: str) -> str:
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes long")
    return raw


def _claim_path(raw: str) -> str:
    if any(ch.isspace() for ch in raw) or "" in raw.split("."):
        raise ValueError("must be a claim name or a dotted path such as realm_access.roles")
    return raw
