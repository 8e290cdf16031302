"""Kafka client helpers any layer may use: the admin client and topic creation, offsets and
watermarks, librdkafka's log lines through Python logging. A leaf: it imports nothing of
the runtime, the web or the CLIs.
"""
