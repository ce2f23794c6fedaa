"""Blocklists: formats, compilation into the index, and (later) sync sources."""
