"""Every setting of the pipeline, read from environment variables.

Precedence: the process environment, then the env file written by
``pipeline stack up`` (so a worker started after ``stack up`` finds the local
stack with nothing exported), then the defaults below, which suit the local stack.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "PIPELINE_"


def default_stack_dir() -> Path:
    """Where ``pipeline stack`` keeps its state: pids, logs, data and the env file."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(os.environ.get("PIPELINE_STACK_DIR") or Path(base) / "shop-pipeline" / "stack")


def stack_env_file() -> Path:
    return Path(os.environ.get("PIPELINE_ENV_FILE") or default_stack_dir() / "stack.env")


def read_env_file(path: Path) -> dict[str, str]:
    return read_env_text(path.read_text()) if path.is_file() else {}


def read_env_text(text: str) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments are skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names it."""


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")


def _int(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# What the broker accepts as a group.instance.id (Kafka's JoinGroupRequest checks the same).
WORKER_ID = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}")


def default_cafile() -> str:
    """The CA bundle every client trusts when no CA file is set: the system's (what
    ``SSL_CERT_FILE`` or OpenSSL's default names), else certifi's. One file for all three
    clients, because left to themselves they would each pick their own (librdkafka probes
    system paths, Python's ssl the OpenSSL defaults, confluent-kafka's registry client certifi)."""
    import certifi

    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get(paths.openssl_cafile_env), paths.cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    return str(certifi.where())


@dataclass(frozen=True)
class TrustedCas:
    """The CAs a client trusts for one server (the broker, or the registry), and the setting
    that chose them: the one place each client's TLS configuration is derived from, so the
    Kafka clients (aiokafka, librdkafka) and the registry client cannot disagree."""

    # The environment variable a user fixes when the server's certificate is not trusted.
    setting: str
    # What the setting says; None: the default bundle (default_cafile).
    cafile: str | None = None

    @property
    def path(self) -> str:
        return self.cafile or default_cafile()

    def describe(self) -> str:
        """The setting and its value, as an error message names it."""
        return f"{self.setting}={self.cafile}" if self.cafile else f"{self.setting} (unset)"

    def context(self) -> ssl.SSLContext:
        """A client context that trusts these CAs only and checks the server's hostname;
        raises SettingsError, naming the setting, when the file is missing or holds no CA."""
        path = self.path
        try:
            return ssl.create_default_context(cafile=path)
        except FileNotFoundError:
            raise SettingsError(f"{self.setting}={path}: no such file") from None
        except IsADirectoryError:
            raise SettingsError(f"{self.setting}={path} is a directory, not a PEM file") from None
        except (ssl.SSLError, OSError, ValueError) as error:
            raise SettingsError(
                f"{self.setting}={path} holds no PEM certificate ({error.__class__.__name__})"
            ) from None

    def librdkafka_config(self) -> dict[str, str]:
        """The same trust as librdkafka properties (producers, consumers, admin clients)."""
        return {"ssl.ca.location": self.path, "ssl.endpoint.identification.algorithm": "https"}

    def registry_config(self) -> dict[str, str]:
        """The same trust as confluent-kafka's ``SchemaRegistryClient`` (httpx) takes it."""
        return {"ssl.ca.location": self.path}


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None

    @property
    def tls(self) -> TrustedCas | None:
        """What the Kafka clients trust, with an ``*SSL`` protocol; None without TLS."""
        if not self.protocol.endswith("SSL"):
            return None
        return TrustedCas(PREFIX + "KAFKA_SSL_CAFILE", self.ssl_cafile)

    def confluent_config(self) -> dict[str, str]:
        """The same security as librdkafka (confluent-kafka) properties."""
        config: dict[str, str] = {"security.protocol": self.protocol}
        if self.protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                config["sasl.username"] = self.sasl_username
            if self.sasl_password is not None:
                config["sasl.password"] = self.sasl_password
        if self.tls is not None:
            config.update(self.tls.librdkafka_config())
        return config


@dataclass(frozen=True)
class Settings:
    app_id: str = "shop-pipeline"
    # Prepended to every contract topic name (empty in production); lets tests and
    # demos run side by side on one broker without sharing topics.
    topic_prefix: str = ""
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    schema_registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    # "user:password"; kept out of repr so it never lands in a log line.
    schema_registry_basic_auth: str | None = field(default=None, repr=False)
    auto_register_schemas: bool = False
    # confluent-kafka's registry client waits forever by default: a registry that accepts the
    # connection and never answers would stall a partition.
    schema_registry_timeout_s: int = 10
    # The CA bundle an https:// registry's certificate is checked against; None: the system's.
    schema_registry_ssl_cafile: str | None = None
    store: str = "rocksdb://"
    data_dir: Path = Path(".data")
    partitions: int = 8
    replication_factor: int = 1
    standby_replicas: int = 0
    # One budget for every RocksDB database the worker opens (every table, active, standby
    # or restoring): a block cache shared by all, their memtables charged to it
    # (pipeline.engine.rocksdb_memory, docs/settings.md).
    state_memory_mb: int = 256
    # How long the copy of a table partition this worker no longer holds stays on disk.
    state_cleanup_delay_s: int = 600
    low_stock_threshold: int = 10
    # A join's stream records held per key while its table row is absent
    # (pipeline.streaming.joins): at most this many, none older in event time than this
    # behind the key's latest event; a record beyond either is dead-lettered.
    join_hold_max_records: int = 1_000
    join_hold_max_age_ms: int = 24 * 3600 * 1000
    # How long a partition of a join's topics waits, at most, for a co-partitioned one read
    # to an earlier time that still has records to read (pipeline.streaming.read_in_step,
    # Kafka Streams' max.task.idle.ms); 0 reads them as fetched, not in step.
    join_in_step_max_wait_ms: int = 10_000
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # Where other workers reach this one to forward a query for a key it owns; differs from
    # web_host when the server binds 0.0.0.0 (containers). None: http://web_host:web_port.
    web_advertised_url: str | None = None
    # Largest request body the web server reads (POSTs); a larger one answers 413.
    web_max_body_bytes: int = 64 * 1024
    # POST /users, /orders, /stock: off answers 403; with a token, they need
    # ``Authorization: Bearer <token>`` (views stay open). Kept out of repr, like passwords.
    ingest_enabled: bool = True
    ingest_token: str | None = field(default=None, repr=False)
    processing_guarantee: str = "at_least_once"
    # exactly_once: how long a transaction collects the batches of every agent before it
    # commits (Kafka Streams' commit.interval.ms). Longer: fewer commits (throughput), and
    # derived events visible to read_committed readers that much later (latency).
    commit_interval_ms: int = 100
    # The longest the broker holds a worker's fetch for partitions with no new records.
    # While it holds one, aiokafka fetches nothing else from that broker, not even for
    # partitions whose records were consumed meanwhile (Faust's 1,500 ms added up to that
    # to events arriving on busy partitions, and read_committed fetches wait for it at
    # every commit): this bounds the delay, at the cost of that many empty fetches per
    # second on an idle worker.
    fetch_max_wait_ms: int = 50
    # Rows each table's agent keeps decoded after writing them (pipeline.streaming.processing
    # RowCache), so the next event of the same key neither reads nor decodes it; 0: none.
    row_cache_rows: int = 10_000
    # The most events an agent takes as one batch (pipeline.streaming.processing). Each
    # batch waits for two broker round trips, so a backlog is worked through faster in
    # larger ones; they bound the work redone after a crash and what a rebalance waits for.
    max_batch_events: int = 2_000
    # The analytics service's windows (docs/windows.md): how long after its end a window
    # still takes events, and how long after its start it is kept (at least size + grace).
    analytics_grace_ms: int = 5 * 60_000
    analytics_retention_ms: int = 7 * 24 * 3_600_000
    # Windowed tables (docs/windows.md): a partition this worker holds that had no event
    # for this long has its stream time advanced by the wall clock, which closes its
    # windows; 0: off, stream time moves with events only.
    window_idle_close_ms: int = 0
    # A message under a schema id the registry answers 404 for: how long the id is asked
    # again (a schema registered a moment ago) before the message is dead-lettered, and
    # how long the id is then believed unknown (its messages dead-lettered at once).
    unknown_schema_recheck_ms: int = 1_000
    unknown_schema_memory_s: int = 60
    # The consumer's static group membership (KIP-345 group.instance.id); None: dynamic.
    # A worker restarted with the same id gets its partitions back without a rebalance.
    worker_id: str | None = None
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # The .avsc files and subjects.yaml; None: the packaged or checkout copy.
    schema_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; ``environ`` defaults to the env file overlaid by os.environ."""
        if environ is None:
            merged = read_env_file(stack_env_file())
            merged.update(os.environ)
            environ = merged

        def get(name: str, default: str) -> str:
            return environ.get(PREFIX + name, default)

        def optional(name: str) -> str | None:
            return environ.get(PREFIX + name) or None

        def whole(name: str, default: int, minimum: int) -> int:
            return _int(PREFIX + name, get(name, str(default)), minimum)

        defaults = cls()
        guarantee = get("PROCESSING_GUARANTEE", defaults.processing_guarantee)
        if guarantee not in PROCESSING_GUARANTEES:
            raise SettingsError(
                f"{PREFIX}PROCESSING_GUARANTEE={guarantee!r} is not one of {PROCESSING_GUARANTEES}"
            )
        protocol = get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {SECURITY_PROTOCOLS}"
            )
        mechanism = get("KAFKA_SASL_MECHANISM", "PLAIN").upper()
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(
                f"{PREFIX}KAFKA_SASL_MECHANISM={mechanism!r} is not one of {SASL_MECHANISMS}"
            )
        store = get("STORE", defaults.store)
        if not store.startswith(("rocksdb://", "memory://")):
            raise SettingsError(f"{PREFIX}STORE={store!r} must be rocksdb:// or memory://")
        basic_auth = optional("SCHEMA_REGISTRY_BASIC_AUTH")
        if basic_auth is not None and ":" not in basic_auth:
            raise SettingsError(f"{PREFIX}SCHEMA_REGISTRY_BASIC_AUTH must be user:password")
        worker_id = optional("WORKER_ID")
        if worker_id is not None and not WORKER_ID.fullmatch(worker_id):
            raise SettingsError(
                f"{PREFIX}WORKER_ID={worker_id!r} must be 1-249 letters, digits, '.', '_' or '-'"
            )
        settings = cls(
            app_id=get("APP_ID", defaults.app_id),
            topic_prefix=get("TOPIC_PREFIX", defaults.topic_prefix),
            kafka_bootstrap_servers=get(
                "KAFKA_BOOTSTRAP_SERVERS", defaults.kafka_bootstrap_servers
            ),
            schema_registry_url=get("SCHEMA_REGISTRY_URL", defaults.schema_registry_url).rstrip(
                "/"
            ),
            schema_registry_basic_auth=basic_auth,
            schema_registry_timeout_s=whole("SCHEMA_REGISTRY_TIMEOUT_S", 10, 1),
            schema_registry_ssl_cafile=optional("SCHEMA_REGISTRY_SSL_CAFILE"),
            auto_register_schemas=_bool(
                PREFIX + "AUTO_REGISTER_SCHEMAS", get("AUTO_REGISTER_SCHEMAS", "false")
            ),
            store=store,
            data_dir=Path(get("DATA_DIR", str(defaults.data_dir))),
            partitions=whole("PARTITIONS", 8, 1),
            replication_factor=whole("REPLICATION_FACTOR", 1, 1),
            standby_replicas=whole("STANDBY_REPLICAS", 0, 0),
            state_memory_mb=whole("STATE_MEMORY_MB", defaults.state_memory_mb, 1),
            state_cleanup_delay_s=whole("STATE_CLEANUP_DELAY_S", 600, 0),
            low_stock_threshold=whole("LOW_STOCK_THRESHOLD", 10, 0),
            join_hold_max_records=whole("JOIN_HOLD_MAX_RECORDS", defaults.join_hold_max_records, 0),
            join_hold_max_age_ms=whole("JOIN_HOLD_MAX_AGE_MS", defaults.join_hold_max_age_ms, 0),
            join_in_step_max_wait_ms=whole(
                "JOIN_IN_STEP_MAX_WAIT_MS", defaults.join_in_step_max_wait_ms, 0
            ),
            web_host=get("WEB_HOST", defaults.web_host),
            web_port=whole("WEB_PORT", 6066, 1),
            web_advertised_url=optional("WEB_ADVERTISED_URL"),
            web_max_body_bytes=whole("WEB_MAX_BODY_BYTES", defaults.web_max_body_bytes, 1),
            ingest_enabled=_bool(PREFIX + "INGEST_ENABLED", get("INGEST_ENABLED", "true")),
            ingest_token=optional("INGEST_TOKEN"),
            processing_guarantee=guarantee,
            commit_interval_ms=whole("COMMIT_INTERVAL_MS", defaults.commit_interval_ms, 1),
            fetch_max_wait_ms=whole("FETCH_MAX_WAIT_MS", defaults.fetch_max_wait_ms, 0),
            row_cache_rows=whole("ROW_CACHE_ROWS", defaults.row_cache_rows, 0),
            max_batch_events=whole("MAX_BATCH_EVENTS", defaults.max_batch_events, 1),
            analytics_grace_ms=whole("ANALYTICS_GRACE_MS", defaults.analytics_grace_ms, 0),
            analytics_retention_ms=whole(
                "ANALYTICS_RETENTION_MS", defaults.analytics_retention_ms, 1
            ),
            window_idle_close_ms=whole("WINDOW_IDLE_CLOSE_MS", defaults.window_idle_close_ms, 0),
            unknown_schema_recheck_ms=whole(
                "UNKNOWN_SCHEMA_RECHECK_MS", defaults.unknown_schema_recheck_ms, 0
            ),
            unknown_schema_memory_s=whole(
                "UNKNOWN_SCHEMA_MEMORY_S", defaults.unknown_schema_memory_s, 0
            ),
            worker_id=worker_id,
            kafka_security=KafkaSecurity(
                protocol=protocol,
                sasl_mechanism=mechanism,
                sasl_username=optional("KAFKA_SASL_USERNAME"),
                sasl_password=optional("KAFKA_SASL_PASSWORD"),
                ssl_cafile=optional("KAFKA_SSL_CAFILE"),
            ),
            schema_dir=Path(schema_dir) if (schema_dir := optional("SCHEMA_DIR")) else None,
        )
        registry_url = settings.schema_registry_url
        if not registry_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"{PREFIX}SCHEMA_REGISTRY_URL={registry_url!r} must start with http:// or https://"
            )
        # A CA file that is missing or holds no certificate stops every command at once.
        for trusted in (settings.kafka_security.tls, settings.registry_tls):
            if trusted is not None:
                trusted.context()
        return settings

    @property
    def web_url(self) -> str:
        """The URL other workers use for this worker's web server."""
        return (self.web_advertised_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def registry_tls(self) -> TrustedCas | None:
        """What the registry client trusts, for an https:// registry; None for http://."""
        if not self.schema_registry_url.startswith("https://"):
            return None
        return TrustedCas(PREFIX + "SCHEMA_REGISTRY_SSL_CAFILE", self.schema_registry_ssl_cafile)

    def registry_client_config(self) -> dict[str, Any]:
        """Configuration for confluent-kafka's ``SchemaRegistryClient``."""
        config: dict[str, Any] = {
            "url": self.schema_registry_url,
            "timeout": self.schema_registry_timeout_s,
        }
        if self.registry_tls is not None:
            config.update(self.registry_tls.registry_config())
        if self.schema_registry_basic_auth:
            config["basic.auth.user.info"] = self.schema_registry_basic_auth
        return config

    def kafka_client_config(self) -> dict[str, str]:
        """Configuration for confluent-kafka producers, consumers and the admin client."""
        return {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            **self.kafka_security.confluent_config(),
        }
