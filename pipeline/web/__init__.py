"""The worker's HTTP side: table views routed to the key's owner, ingest, health and metrics."""
