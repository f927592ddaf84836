"""Where the `.part` helpers used to live; now `progress_server.engine.partfile`."""

from progress_server.engine.partfile import fsync_dir, sha256_of

__all__ = ["fsync_dir", "sha256_of"]
