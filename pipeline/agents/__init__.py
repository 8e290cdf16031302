"""One module per agent; pipeline.app wires them to topics and tables."""
