"""filterd: an ISP-side DNS resolver proxy that enforces authority blocklists."""

__version__ = "0.1.0"
