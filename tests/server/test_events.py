"""The WebSocket event stream announces changes to runs and workers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.api import Api, Mint, bearer
from tornado.httpclient import HTTPClientError


async def next_event(ws: Any, type_: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        if message["type"] == type_:
            return message


async def test_events_announce_created_and_changed_runs_and_workers(
    jp_ws_fetch: Any, api: Api, mint: Mint
) -> None:
    ws = await jp_ws_fetch("labrun", "api", "v1", "events")
    await next_event(ws, "hello")
    run = await api("POST", "runs", body={"name": "watched"}, status=201)
    created = await next_event(ws, "run.created")
    assert created["data"]["id"] == run["id"] and created["data"]["name"] == "watched"
    await api("PATCH", f"runs/{run['id']}", body={"status": "completed"})
    updated = await next_event(ws, "run.updated")
    assert updated["data"]["status"] == "completed"
    await api("PUT", "workers/w9", body={"host": "h"}, headers=bearer(mint("s", scope="pool")))
    worker = await next_event(ws, "worker.updated")
    assert worker["data"]["id"] == "w9"
    ws.close()


async def test_event_stream_refuses_anonymous_clients(jp_ws_fetch: Any) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_ws_fetch("labrun", "api", "v1", "events", headers={"Authorization": ""})
    assert info.value.code == 403
