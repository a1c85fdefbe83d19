"""Every process sizes its database pool from TICKETING_DB_POOL_MAX (it was hard-coded per process)."""

import importlib

import asyncpg
import pytest

from services.eventstore import db
from services.settings import Settings


class Captured(Exception):
    pass


@pytest.mark.parametrize(
    "module",
    ["services.api.main", "services.outbound.main", "services.projector.main", "services.scheduler.main"],
)
async def test_the_pool_size_comes_from_settings(
    module: str, service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []

    async def capture(*args: object, max_size: int, **kwargs: object) -> db.Pool:
        sizes.append(max_size)
        raise Captured

    monkeypatch.setattr(asyncpg, "create_pool", capture)
    settings = Settings.from_env({**service_env, "TICKETING_DB_POOL_MAX": "3"})
    with pytest.raises(Captured):
        await importlib.import_module(module).serve(settings)
    assert sizes == [3]
