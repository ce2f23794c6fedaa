"""Per-network profiles: client groups, schedules, safe search, and why a name is answered so.

Pure code over configuration values and the compiled index (no sockets, no
event loop): the query path (``filterd.pipeline.policy``) asks it which
group a client is in and which categories its profile applies now;
``explain`` answers the same question for one name, client and time, for
``filterd lookup`` and the block page. docs/profiles.md is the reference.
"""
