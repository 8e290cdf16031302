"""What the Quix peers (quix_shop.py, quix_analytics.py) share: their command line's common
arguments, the Application both run (at-least-once, Quix's defaults otherwise) and Avro
over the registry. Imported by the peers as a sibling script, in the Quix venv."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quixstreams import Application
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer
from quixstreams.models.serializers.schema_registry import (
    SchemaRegistryClientConfig,
    SchemaRegistrySerializationConfig,
)

# Seconds Application.run's consumer waits for a batch (Quix's default: 1.0): a join's
# concat-ed topics are read from a buffer refilled once per poll (docs/benchmarks.md).
POLL_TIMEOUT = 0.001


def arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the arguments every peer takes; the peer adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--input", required=True, help="the order_created topic")
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--schemas-dir", required=True)
    return parser


def application(args: argparse.Namespace) -> Application:
    return Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        processing_guarantee="at-least-once",
        consumer_poll_timeout=POLL_TIMEOUT,
    )


class Avro:
    """Confluent Avro over the registry at ``args.registry``, the schemas read from
    ``args.schemas_dir``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.schemas = Path(args.schemas_dir)
        self.registry = SchemaRegistryClientConfig(url=args.registry)

    def deserializer(self) -> AvroDeserializer:
        return AvroDeserializer(schema_registry_client_config=self.registry)

    def serializer(self, avsc: str) -> AvroSerializer:
        """For the subject the bench registered: its latest version."""
        return AvroSerializer(
            json.loads((self.schemas / avsc).read_text()),
            schema_registry_client_config=self.registry,
            schema_registry_serialization_config=SchemaRegistrySerializationConfig(
                auto_register_schemas=False, use_latest_version=True
            ),
        )
