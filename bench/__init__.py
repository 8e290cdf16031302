"""Benchmarks of the pipeline on the local stack (``python -m bench``); not part of the tests."""

# Before any bench module imports confluent-kafka's schema-registry client: importing the
# pipeline package installs its filter for authlib's import-time AuthlibDeprecationWarning
# (pipeline/__init__.py), which would otherwise open every `python -m bench ...` command.
import pipeline  # noqa: F401
