"""The meshscope HTTP API and web page (FastAPI): ``create_app(settings)``."""

from meshscope.api.app import create_app

__all__ = ["create_app"]
