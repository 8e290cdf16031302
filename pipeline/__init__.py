"""Faust stream processing of shop events, with Avro records checked against a schema registry."""

import warnings

import authlib.deprecate

# confluent-kafka's schema-registry client imports authlib's httpx integration, which authlib
# 1.9 deprecates on import with an "always" filter of its own (installed by the import above,
# so ours goes in front of it). The warning is not about our code and would open every command.
warnings.filterwarnings(
    "ignore",
    message="The httpx module is deprecated",
    category=authlib.deprecate.AuthlibDeprecationWarning,
)
