"""The ``pipeline topics`` and ``pipeline dlq`` CLIs (the Kafka helpers they use are in
pipeline.kafka).
"""
