"""``GET /api/proxies``: every proxy that has sent records, named by pod, namespace and role when its node
id is Istio's (by log name and peer address when it sent none), with its access-log loss accounting
(written and dropped by the proxy's own admin stats, received by our store) and how it proved its
identity to the collector (a node id is only a claim unless the sender was authenticated)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends

from meshscope.api.deps import reader_of, settings_of
from meshscope.api.schemas import ProxyInfo, ProxyList, ProxyLossInfo
from meshscope.model import parse_node_id
from meshscope.pipelines import AccessQuery, StoreReader
from meshscope.proxy import account
from meshscope.settings import Settings

router = APIRouter(prefix="/api/proxies", tags=["proxies"])
log = logging.getLogger(__name__)


@router.get("", response_model=ProxyList)
async def list_proxies(
    store: Annotated[StoreReader, Depends(reader_of)],
    settings: Annotated[Settings, Depends(settings_of)],
) -> ProxyList:
    """Proxies by node id; ``loss`` is filled for those whose admin address is in settings.proxy_admins."""
    nodes = await store.node_ids()
    arrived = {n["node_id"]: n["records"] for n in nodes}
    losses = await account(settings.proxy_admins, arrived, memory=loss_memory(settings),
                           bundled=bundled(settings)) if settings.proxy_admins else []
    by_node = {loss.node_id: loss for loss in losses if loss.node_id in arrived}
    items = []
    for n in nodes:
        node = parse_node_id(n["node_id"])
        loss = by_node.get(n["node_id"])
        auth = await _latest_auth(store, n["node_id"])
        items.append(ProxyInfo(**n, role=node.role, name=node.name, namespace=node.namespace, ip=node.ip,
                               auth=auth, authenticated=auth is not None,
                               loss=ProxyLossInfo(**loss.to_dict()) if loss else None))
    unmatched = [ProxyLossInfo(**loss.to_dict()) for loss in losses if loss.node_id not in arrived]
    return ProxyList(items=items, unmatched_admins=unmatched)


def bundled(settings: Settings) -> dict[str, tuple[float, float]]:
    """The proxies that die with this process, and the longest gaps between the watch's reads of them
    (while their counters move, otherwise) as the memory file shows them: two pauses (a kill can land
    after a read but before its memory write) plus the reads' time on a loaded event loop."""
    if settings.proxy_poll_s <= 0:
        return {}
    busy = min(settings.proxy_poll_busy_s, settings.proxy_poll_s)
    gaps = (2 * busy + 0.5, 2 * settings.proxy_poll_s + 0.5)
    return dict.fromkeys(settings.proxy_admins_bundled, gaps)


def loss_memory(settings: Settings) -> Path:
    """Where the API remembers each proxy's runs, so its loss account survives an API restart."""
    return settings.data_dir / "proxy-loss.json"


async def read_proxies(settings: Settings, http: httpx.AsyncClient | None = None) -> list:
    """One read of every proxy's counters into the account (and its memory file); nothing is stored."""
    return await account(settings.proxy_admins, {}, memory=loss_memory(settings), bundled=bundled(settings),
                         http=http)


async def watch_proxies(settings: Settings) -> None:
    """Read the proxies' counters every ``proxy_poll_s`` until cancelled: a restart between two looks at
    /api/proxies is then still seen (its run's counts carried), not only when someone asks. While a
    proxy's counters move, every ``proxy_poll_busy_s``: entries it logs after the last read are lost
    uncounted if it dies, so the unseen window stays short (one filtered /stats read each, ~1 ms).
    Following the runs needs only the proxies' counters, so the store is not queried here."""
    written: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=2.0) as http:  # one client: a new one per read costs ~30 ms CPU
        while True:
            await _watch_once(settings, http, written)


async def _watch_once(settings: Settings, http: httpx.AsyncClient, written: dict[str, int]) -> None:
    """One read of the watch, then its pause: short while some proxy's written counter moved."""
    busy = False
    try:
        for loss in await read_proxies(settings, http):
            busy |= loss.reachable and loss.written != written.get(loss.admin, loss.written)
            if loss.reachable:
                written[loss.admin] = loss.written
    except Exception as exc:  # noqa: BLE001 - a proxy hiccup must not end the watch
        log.debug("proxy watch: %s", exc)
    pause = min(settings.proxy_poll_busy_s, settings.proxy_poll_s) if busy else settings.proxy_poll_s
    await asyncio.sleep(pause)


async def _latest_auth(store: StoreReader, node_id: str) -> str | None:
    """How the sender of this node's newest access record proved itself ("mtls:<name>", "token"), or
    None: it sent without credentials (allowed on loopback only), so its node id is unverified."""
    page = await store.list_access(AccessQuery(node_id=node_id, limit=1))
    return page.items[0].node_auth if page.items else None
