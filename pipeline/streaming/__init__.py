"""The streaming runtime: how agents are run on Faust (batches, tables, producer, dead letters,
restore).
"""
