"""The stack suites reuse the pipeline suites' real Tansu broker and osmem search server."""

from tests.pipelines.conftest import tansu  # noqa: F401 - fixture
from tests.pipelines.search_server import search_server  # noqa: F401 - fixture
