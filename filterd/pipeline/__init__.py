"""The query path: guard, policy, cache, forward, assembled in resolver.py."""
