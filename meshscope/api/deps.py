"""Request-scoped access to what the app opened at start-up: the store and the uploads."""

from __future__ import annotations

from fastapi import Request

from meshscope.api.uploads import Uploads
from meshscope.settings import Settings
from pipelines.store.base import Store


def store_of(request: Request) -> Store:
    return request.app.state.store


def uploads_of(request: Request) -> Uploads:
    return request.app.state.uploads


def settings_of(request: Request) -> Settings:
    return request.app.state.settings
