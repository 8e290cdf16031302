"""Faust stream processing of shop events, with Avro records checked against a schema registry."""
