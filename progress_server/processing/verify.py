"""verify: the optional sha256 a task was submitted with."""

from __future__ import annotations

import asyncio

from progress_server.engine.partfile import sha256_of
from progress_server.models import ErrorType
from progress_server.processing.pipeline import ProcessingContext, ProcessingError


class VerifyChecksum:
    name = "verify"

    async def run(self, ctx: ProcessingContext) -> None:
        expected = ctx.task.sha256
        if not expected:
            return
        actual = ctx.sha256 or await asyncio.to_thread(sha256_of, ctx.path)
        ctx.sha256 = actual
        if actual != expected.lower():
            # Kept aside, not deleted: the bytes may still be worth a look, but never under
            # the name of a completed download.
            aside = ctx.path.with_name(ctx.path.name + ".sha256-mismatch")
            await asyncio.to_thread(ctx.path.replace, aside)
            raise ProcessingError(
                ErrorType.CHECKSUM_MISMATCH,
                f"sha256 is {actual}, expected {expected.lower()}; file kept as {aside.name}",
            )
