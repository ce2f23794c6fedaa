"""Values that several rooms share: rules and actions, the sources of rules.

The bottom layer: it imports nothing from filterd but ``errors``, so the
pure core (``wire``, ``formats``, ``matching``), ``config`` and every room
can name the same values without importing each other.
"""
