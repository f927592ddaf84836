"""The download engine: resumable, segmented HTTP transfers into one `.part` file.

`Downloader.download(task, observer)` runs a task's attempts (downloader.py); one attempt
(transfer.py) plans segments (segments.py), fetches the first over one connection and,
when the origin allows and the connection proves slow, the rest over extra ranged
connections (workers.py, connection.py), all writing one preallocated `.part` at their
offsets off the event loop (partfile.py, storage.py).

Where a split download's segment offsets live: a small journal beside the `.part`
(`<name>.part.segments`, journal.py), not rows in the database. The journal is written
only after the bytes it claims were fdatasync'd, atomically (temp file, fsync, rename),
about four times a second while a split download runs. It stays beside the `.part` for
three reasons. It describes the file next to it and nothing else: the two are created,
cut back and deleted together, so a journal can never name bytes of another file, and a
`.part` copied or moved with its journal stays resumable. Keeping it out of the database
keeps these frequent small durable writes out of the writer that every task's lifecycle
events queue on (the group commit): a few split downloads would otherwise add a stream
of fsync'd transactions to every other task's wait. And it works unchanged for servers
sharing one downloads folder (cluster mode): the node that continues a download finds
the offsets where it finds the bytes. The engine sees only the `SegmentJournal`
interface, given by a factory, so a store-backed journal would need no engine change.
"""

from progress_server.engine.downloader import Downloader
from progress_server.engine.errors import DownloadError
from progress_server.engine.network import TransferObserver, TransferOutcome

__all__ = ["DownloadError", "Downloader", "TransferObserver", "TransferOutcome"]
