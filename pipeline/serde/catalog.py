"""The schema catalog: which Avro record each topic carries, read from ``schemas/``.

The ``.avsc`` files are the single source of truth for fields; ``subjects.yaml``
maps each topic to its record file and its subject's compatibility level. No
Python code restates a field.

Where the schemas live: ``PIPELINE_SCHEMA_DIR`` if set; else ``pipeline/_schemas``
inside a built wheel; else the repository's top-level ``schemas/`` (source or
editable checkout).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastavro import parse_schema
from fastavro.schema import SchemaParseException

import pipeline
from pipeline.serde.errors import UnknownTopic

SUBJECTS_FILE = "subjects.yaml"
COMPATIBILITY_LEVELS = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)


class CatalogError(ValueError):
    """The schemas directory or its mapping is unusable; the message names the file and entry."""


def default_schema_dir() -> Path:
    """``pipeline/_schemas`` in a built wheel, else the checkout's top-level ``schemas/``."""
    package_dir = Path(pipeline.__file__).parent
    packaged = package_dir / "_schemas"
    if packaged.is_dir():
        return packaged
    return package_dir.parent / "schemas"


def subject_for(topic: str) -> str:
    """Topic-name strategy: the value subject of ``topic``."""
    return f"{topic}-value"


@dataclass(frozen=True)
class TopicSchema:
    """One topic's value schema as the code was built with it."""

    topic: str
    subject: str
    record_name: str  # full name, e.g. "shop.OrderCreated"
    compatibility: str
    path: Path
    schema: Mapping[str, Any]  # the .avsc as JSON, unparsed
    schema_str: str  # compact JSON text: what is registered and looked up
    parsed: Any  # fastavro's parsed form, for the reader and writer


@dataclass(frozen=True)
class Catalog:
    """Every topic's schema, by topic name."""

    schema_dir: Path
    topics: Mapping[str, TopicSchema]

    @classmethod
    def load(cls, schema_dir: Path | None = None, *, topic_prefix: str = "") -> Catalog:
        """Read ``subjects.yaml`` and every record it names.

        ``topic_prefix`` is prepended to every topic (and so to every subject): tests
        use it to get subjects of their own in a shared registry.
        """
        directory = schema_dir if schema_dir is not None else default_schema_dir()
        mapping_path = directory / SUBJECTS_FILE
        try:
            mapping = yaml.safe_load(mapping_path.read_text())
        except OSError as exc:
            raise CatalogError(f"cannot read {mapping_path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise CatalogError(f"{mapping_path} is not valid YAML: {exc}") from None
        entries = mapping.get("topics") if isinstance(mapping, dict) else None
        if not isinstance(entries, dict) or not entries:
            raise CatalogError(f"{mapping_path} needs a non-empty 'topics:' mapping")
        topics = {}
        for topic, entry in entries.items():
            full_topic = topic_prefix + str(topic)
            topics[full_topic] = _load_entry(directory, mapping_path, full_topic, entry)
        return cls(schema_dir=directory, topics=topics)

    def __getitem__(self, topic: str) -> TopicSchema:
        try:
            return self.topics[topic]
        except KeyError:
            raise UnknownTopic(
                f"topic {topic!r} has no schema in {self.schema_dir / SUBJECTS_FILE}"
            ) from None

    def __iter__(self) -> Iterator[TopicSchema]:
        return iter(self.topics.values())

    def __len__(self) -> int:
        return len(self.topics)


def _load_entry(directory: Path, mapping_path: Path, topic: str, entry: Any) -> TopicSchema:
    where = f"{mapping_path}: topic {topic!r}"
    if not isinstance(entry, dict) or "record" not in entry:
        raise CatalogError(f"{where} needs 'record: <file>.avsc' and 'compatibility: <level>'")
    compatibility = str(entry.get("compatibility", "BACKWARD")).upper()
    if compatibility not in COMPATIBILITY_LEVELS:
        raise CatalogError(
            f"{where}: compatibility {compatibility!r} is not one of {COMPATIBILITY_LEVELS}"
        )
    path = directory / str(entry["record"])
    try:
        schema = json.loads(path.read_text())
    except OSError as exc:
        raise CatalogError(f"{where}: cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{where}: {path} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise CatalogError(f"{where}: {path} must hold one Avro record schema")
    try:
        # parse_schema adds fastavro's private keys to what it is given: parse a copy.
        parsed = parse_schema(json.loads(json.dumps(schema)))
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise CatalogError(f"{where}: {path} is not a valid Avro schema: {exc}") from None
    namespace = schema.get("namespace")
    name = str(schema["name"])
    record_name = name if "." in name or not namespace else f"{namespace}.{name}"
    return TopicSchema(
        topic=topic,
        subject=subject_for(topic),
        record_name=record_name,
        compatibility=compatibility,
        path=path,
        schema=schema,
        schema_str=json.dumps(schema, separators=(",", ":")),
        parsed=parsed,
    )
