"""Pure DNS wire handling: no sockets, no asyncio, no metrics."""
