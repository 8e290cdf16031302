"""Kafka administration: topic creation, offsets, lag, and the ``pipeline topics`` / ``pipeline
dlq`` CLIs.
"""
