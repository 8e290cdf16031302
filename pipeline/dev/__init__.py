"""Developer tooling: the local stack, worker processes, the demo and the load generator. A
worker never imports it.
"""
