"""A local Kafka (KRaft) and Apicurio Registry stack, fetched from Maven Central and run as plain
Java processes on loopback: what the tests and the demo run against when no Docker engine is around.
"""
