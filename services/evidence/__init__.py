"""Evidence files: the store every door (API, purges, export) reaches through `open_store`."""

from services.evidence.store import EvidenceStore, LocalStore
from services.settings import Settings


def open_store(settings: Settings) -> EvidenceStore:
    """The S3-compatible bucket when one is configured, else the local folder."""
    if settings.evidence_s3 is not None:
        from services.evidence.s3 import S3Store  # (aiobotocore: the `s3` extra)

        return S3Store(settings.evidence_s3)
    return LocalStore(settings.evidence_dir)
