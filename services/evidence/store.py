"""Evidence files (memory dumps, pcaps, disk images): a content-addressed store per org.

A file is kept under its SHA-256 in its org's own folder (`<oid>/<aa>/<sha256>`), so that an org's
files are one folder (or key prefix) an org purge deletes, and another org never reaches a file
however its digest is guessed. An upload is streamed to a temporary file (or object) while its
digest is computed (never held whole in memory), then moved into place: a partial, refused or
broken upload leaves nothing behind. Two stores keep this contract: the local filesystem here, and
an S3-compatible object store (`services.evidence.s3`).
"""

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

CHUNK: Final = 1 << 20
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_ORG: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # an org id as a folder name


class TooLarge(Exception):
    """Over the org's upload limit: nothing was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is over this org's upload limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Stored:
    sha256: str
    size: int
    new: bool  # not in the org's store before (the same content uploaded before shares its file)


def org_folder(oid: str) -> str:
    """The org's folder (or key prefix): the org id itself when it is a safe name, else its digest,
    so that nothing can climb out of the store's root."""
    return oid if _ORG.match(oid) else "x-" + hashlib.sha256(oid.encode()).hexdigest()


def is_digest(sha256: str) -> bool:
    return _SHA256.match(sha256) is not None


class EvidenceStore(Protocol):
    """What the API, the purges and the export need of a store."""

    async def put(self, oid: str, chunks: AsyncIterator[bytes], limit: int) -> Stored:
        """The chunks, kept under their digest; over `limit` bytes, TooLarge and nothing kept. An
        exception from `chunks` (a client gone mid-upload) leaves nothing either."""
        ...

    async def size(self, oid: str, sha256: str) -> int | None:
        """The file's size, if the org holds it."""
        ...

    def read(self, oid: str, sha256: str, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """Bytes `start` to `stop` (exclusive) of a file the org holds, a chunk at a time."""
        ...

    async def delete(self, oid: str, sha256: str) -> None: ...

    async def delete_org(self, oid: str) -> int:
        """Every file of the org (its purge); how many there were."""
        ...

    async def orgs(self) -> list[str]:
        """The org folders there are (a purge test's "nothing of the org is left")."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class LocalStore:
    """The local filesystem (a folder under .state/ in dev, a volume in deploy/)."""

    root: Path

    def _org(self, oid: str) -> Path:
        return self.root / org_folder(oid)

    def path(self, oid: str, sha256: str) -> Path | None:
        """The file of this digest in this org, if the org holds it."""
        if not is_digest(sha256):
            return None
        path = self._org(oid) / sha256[:2] / sha256
        return path if path.is_file() else None

    async def put(self, oid: str, chunks: AsyncIterator[bytes], limit: int) -> Stored:
        folder = self._org(oid)
        temp = folder / ".incoming" / uuid.uuid4().hex
        await asyncio.to_thread(temp.parent.mkdir, parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            with await asyncio.to_thread(open, temp, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(limit)
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(os.fsync, out.fileno())
            sha = digest.hexdigest()
            final = folder / sha[:2] / sha
            await asyncio.to_thread(final.parent.mkdir, exist_ok=True)
            existed = await asyncio.to_thread(final.exists)
            await asyncio.to_thread(os.replace, temp, final)  # the same content again: the same file
            return Stored(sha, size, not existed)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(temp.unlink)

    async def size(self, oid: str, sha256: str) -> int | None:
        def size() -> int | None:
            path = self.path(oid, sha256)
            return None if path is None else path.stat().st_size

        return await asyncio.to_thread(size)

    async def read(
        self, oid: str, sha256: str, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[bytes]:
        path = await asyncio.to_thread(self.path, oid, sha256)
        if path is None:
            raise FileNotFoundError(sha256)
        with await asyncio.to_thread(open, path, "rb") as f:
            f.seek(start)
            left = None if stop is None else stop - start
            while left is None or left > 0:
                chunk = await asyncio.to_thread(f.read, CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def delete(self, oid: str, sha256: str) -> None:
        path = self.path(oid, sha256)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)

    async def delete_org(self, oid: str) -> int:
        folder = self._org(oid)

        def remove() -> int:
            if not folder.exists():
                return 0
            count = sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder)
            return count

        return await asyncio.to_thread(remove)

    async def orgs(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            p.name for p in await asyncio.to_thread(lambda: list(self.root.iterdir())) if p.is_dir()
        )

    async def close(self) -> None:
        pass
