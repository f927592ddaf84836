"""progress-server: a self-hosted download server with live progress."""

__version__ = "0.1.0"
