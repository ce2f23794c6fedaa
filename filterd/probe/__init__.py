"""The enforcement probe: does a resolver block what a list says? (docs/probe.md)

``filterd probe`` draws a reproducible random sample of a list's block
rules, asks any resolver (filterd, Unbound with an RPZ, an appliance) for
names those rules must block and for control names that must resolve, and
judges each answer from the answer alone. The rooms:

- ``sample``: the list read with filterd's own parsers; sampling; names to ask;
- ``verdict``: an answer judged blocked, resolved or error (pure);
- ``client``: the questions asked over UDP/TCP, bounded in time and number;
- ``report``: compliance, failures, controls, as text or JSON (pure);
- ``cli``: the command (``register``, ``run_probe``).
"""

from __future__ import annotations
