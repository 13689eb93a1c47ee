"""``GET /api/proxies``: every proxy that has sent records, with its access-log loss accounting
(written and dropped by the proxy's own admin stats, received by our store)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from meshscope.api.deps import reader_of, settings_of
from meshscope.api.schemas import ProxyInfo, ProxyList, ProxyLossInfo
from meshscope.pipelines import StoreReader
from meshscope.proxy import account
from meshscope.settings import Settings

router = APIRouter(prefix="/api/proxies", tags=["proxies"])


@router.get("", response_model=ProxyList)
async def list_proxies(
    store: Annotated[StoreReader, Depends(reader_of)],
    settings: Annotated[Settings, Depends(settings_of)],
) -> ProxyList:
    """Proxies by node id; ``loss`` is filled for those whose admin address is in settings.proxy_admins."""
    nodes = await store.node_ids()
    arrived = {n["node_id"]: n["records"] for n in nodes}
    losses = await account(settings.proxy_admins, arrived) if settings.proxy_admins else []
    by_node = {loss.node_id: loss for loss in losses if loss.node_id in arrived}
    items = [
        ProxyInfo(
            **n, loss=ProxyLossInfo(**by_node[n["node_id"]].to_dict()) if n["node_id"] in by_node else None
        )
        for n in nodes
    ]
    unmatched = [ProxyLossInfo(**loss.to_dict()) for loss in losses if loss.node_id not in arrived]
    return ProxyList(items=items, unmatched_admins=unmatched)
