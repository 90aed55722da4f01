"""The `ml` schema: the only package that writes SQL against `ml.*`.

DDL and migrations, table and column comments, version writes and typed reads, statuses and
events, trials, snapshots, drift and profile tables, and the one atomic stream-to-table
writer. Everything else asks the store.
"""
