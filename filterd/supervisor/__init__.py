"""The supervisor: everything of a running filterd that is not the query path.

One process, above the workers (filterd/worker.py) that serve DNS on the
sockets it binds. Its parts, each the one owner of what it names, are
wired and run in order by ``daemon.run_daemon`` (the composition root; its
docstring lists them and the start-up and stop order). ``cli`` imports
``daemon`` and ``settings``; nothing else imports this package.
"""
