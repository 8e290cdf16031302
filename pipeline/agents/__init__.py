"""One module per agent: its table, its rules and what it emits (pipeline.streaming.topology).

A service (pipeline.services) registers the agents it runs.
"""
