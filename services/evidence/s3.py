"""The evidence store in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...), through aiobotocore.

The same contract as the local store: a file under `<prefix><org>/<aa>/<sha256>`. Its digest is only
known at the end of the upload, so a large file is sent as a multipart upload to a temporary key
(`<org>/.incoming/<uuid>`) in parts of PART bytes (the most an upload holds in memory), then copied
to its key on the server; a file smaller than one part goes to its key in one request. A refused or
broken upload aborts its multipart upload: nothing is left behind (a process killed mid-upload
leaves an incomplete upload, which the bucket's lifecycle rule for `.incoming/` ends:
docs/evidence.md).
"""

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from services.evidence.store import CHUNK, Stored, TooLarge, is_digest, org_folder
from services.settings import S3Settings

PART: Final = 8 << 20  # S3's parts are 5 MiB at least (but the last)
COPY_MAX: Final = 5 << 30  # the largest object one CopyObject copies: the S3 store's largest file
_DELETE_BATCH: Final = 1000  # DeleteObjects takes this many keys at most
_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Store:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._stack = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()
        self._client: Any = None

    async def _s3(self) -> Any:
        """The client, opened at first use (in the process's loop) and kept until `close`."""
        async with self._opening:
            if self._client is None:
                s = self.settings
                path_style = {"addressing_style": "path"} if s.endpoint_url else {}
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=s.region,
                        endpoint_url=s.endpoint_url,
                        aws_access_key_id=s.access_key_id,
                        aws_secret_access_key=str(s.secret_access_key) if s.secret_access_key else None,
                        config=AioConfig(s3=path_style, retries={"max_attempts": 3, "mode": "standard"}),
                    )
                )
        return self._client

    def _org(self, oid: str) -> str:
        return f"{self.settings.prefix}{org_folder(oid)}/"

    def _key(self, oid: str, sha256: str) -> str:
        return f"{self._org(oid)}{sha256[:2]}/{sha256}"

    async def put(self, oid: str, chunks: AsyncIterator[bytes], limit: int) -> Stored:
        limit = min(limit, COPY_MAX)
        s3 = await self._s3()
        temp = f"{self._org(oid)}.incoming/{uuid.uuid4().hex}"
        digest, size, buffer = hashlib.sha256(), 0, bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        completed = False

        async def send_part() -> None:
            nonlocal upload_id
            if upload_id is None:
                upload_id = (await s3.create_multipart_upload(Bucket=self.bucket, Key=temp))["UploadId"]
            number = len(parts) + 1
            sent = await s3.upload_part(
                Bucket=self.bucket, Key=temp, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
            )
            parts.append({"ETag": sent["ETag"], "PartNumber": number})
            buffer.clear()

        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                digest.update(chunk)
                buffer += chunk
                if len(buffer) >= PART:
                    await send_part()
            sha = digest.hexdigest()
            final = self._key(oid, sha)
            existed = await self._head(final) is not None
            if upload_id is None:  # smaller than a part: straight to its key
                if not existed:
                    await s3.put_object(Bucket=self.bucket, Key=final, Body=bytes(buffer))
            else:
                if buffer:
                    await send_part()
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=temp, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
                upload_id, completed = None, True
                if not existed:  # the same content again: the same object
                    await s3.copy_object(
                        Bucket=self.bucket, Key=final, CopySource={"Bucket": self.bucket, "Key": temp}
                    )
            return Stored(sha, size, not existed)
        finally:
            with contextlib.suppress(Exception):  # (a failure here must not hide the upload's own)
                if upload_id is not None:
                    await s3.abort_multipart_upload(Bucket=self.bucket, Key=temp, UploadId=upload_id)
                if completed:
                    await s3.delete_object(Bucket=self.bucket, Key=temp)

    async def _head(self, key: str) -> int | None:
        try:
            head = await (await self._s3()).head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        size: int = head["ContentLength"]
        return size

    async def size(self, oid: str, sha256: str) -> int | None:
        return await self._head(self._key(oid, sha256)) if is_digest(sha256) else None

    async def read(
        self, oid: str, sha256: str, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[bytes]:
        if not is_digest(sha256):
            raise FileNotFoundError(sha256)
        if stop is not None and stop <= start:
            return
        last = "" if stop is None else stop - 1
        ranged = {} if start == 0 and stop is None else {"Range": f"bytes={start}-{last}"}
        s3 = await self._s3()
        try:
            got = await s3.get_object(Bucket=self.bucket, Key=self._key(oid, sha256), **ranged)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(sha256) from None
            raise
        async with got["Body"] as body:
            while chunk := await body.read(CHUNK):
                yield chunk

    async def delete(self, oid: str, sha256: str) -> None:
        if is_digest(sha256):
            await (await self._s3()).delete_object(Bucket=self.bucket, Key=self._key(oid, sha256))

    async def delete_org(self, oid: str) -> int:
        s3, prefix = await self._s3(), self._org(oid)
        for u in await self.uploads(prefix):  # uploads under way (or left by a killed process) go too
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
        count = 0
        async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for i in range(0, len(keys), _DELETE_BATCH):
                batch = keys[i : i + _DELETE_BATCH]
                done = await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if done.get("Errors"):
                    raise RuntimeError(f"the object store kept {len(done['Errors'])} of the org's files")
            count += sum(1 for k in keys if "/.incoming/" not in k["Key"])
        return count

    async def uploads(self, prefix: str) -> list[dict[str, Any]]:
        """The multipart uploads begun under the prefix and neither completed nor aborted."""
        s3, found = await self._s3(), []
        pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            async for page in pages:
                found += page.get("Uploads", [])
        except ClientError as exc:  # (some servers answer this when the bucket never had one)
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
        return found

    async def orgs(self) -> list[str]:
        s3, found = await self._s3(), []
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.settings.prefix, Delimiter="/"
        )
        cut = len(self.settings.prefix)
        async for page in pages:
            found += [p["Prefix"][cut:].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(found)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
