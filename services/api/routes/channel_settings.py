"""Channel settings (admin): MU limit (I17), field types (P2), member-hash secret (H1,
write-only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.store import queries
from services.store.channels import KEEP, configure_channel

from ..auth import Admin, Pool
from ..models import SettingsPatch, problems
from ..params import Channel

router = APIRouter(prefix="/v1/channels/{ch}/settings", tags=["channel settings"])


@router.get("", responses=problems(422))
async def get_settings(ch: Channel, pool: Pool, _: Admin) -> dict[str, Any]:
    """The settings; the secret only as `memberHashSecretSet`."""
    return await queries.channel_settings(pool, ch)


@router.patch("", responses=problems(422))
async def patch_settings(ch: Channel, body: SettingsPatch, pool: Pool, _: Admin) -> dict[str, Any]:
    """What is given changes (`null` removes the MU limit or the secret); `fields` add
    or change declared profile types. Configuration, not a fact: applied at once."""
    given = body.model_fields_set
    await configure_channel(
        pool, ch, fields=dict(body.fields),
        member_hash_secret=body.memberHashSecret if "memberHashSecret" in given else KEEP,
        mu_limit=body.muLimit if "muLimit" in given else KEEP,
    )
    return await queries.channel_settings(pool, ch)
