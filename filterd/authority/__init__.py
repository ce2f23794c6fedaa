"""The reference authority of the sync protocol (docs/authority.md, docs/sync-protocol.md).

A Department edits its lists in a data directory (``store``), publishes
signed serials into it, serves them over HTTP (``server``), pushes signed
notifications to operator nodes (``notify``) and reads back, from the
operators' receipts, who enforces what and how fast (``compliance``).
"""
