"""Serialisation: Avro in Confluent wire format, the schema catalog and the registry client."""
