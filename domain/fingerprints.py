"""What the configuration shows of a secret it keeps apart (an ExtraHop key, a channel's webhook
URL): enough to tell that one is set and whether it changed, never enough to recover it."""

import hashlib


def fingerprint(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]
