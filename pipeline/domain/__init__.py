"""The shop's domain: pure business rules, row encodings and record builders; no I/O, no Faust."""
