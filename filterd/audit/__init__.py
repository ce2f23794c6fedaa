"""The audit trail: a hash-chained, append-only record of what was enforced.

A room beside the query path (docs/audit.md). The supervisor writes it (list
applications, rejected updates, reloads, periodic statistics); ``filterd
audit verify`` checks it; ``filterd report`` turns it into the operator's
periodic report to the authority. Nothing in it names a client or a query.
"""
