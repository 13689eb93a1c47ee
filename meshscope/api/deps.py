"""Request-scoped access to what the app opened at start-up: the store (through its read interface;
routes never write it) and the uploads."""

from __future__ import annotations

from fastapi import Request

from meshscope.api.uploads import Uploads
from meshscope.pipelines import StoreReader
from meshscope.settings import Settings


def reader_of(request: Request) -> StoreReader:
    return request.app.state.store


def uploads_of(request: Request) -> Uploads:
    return request.app.state.uploads


def settings_of(request: Request) -> Settings:
    return request.app.state.settings
