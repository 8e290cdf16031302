"""The schema-evolution workflow: compatibility checks against the registry, diffs, the
``pipeline schemas`` CLI.
"""
