"""The REST API (``/api/v1``, OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/docs``)."""

from bluerocktel.api.problems import install_problem_handlers
from bluerocktel.api.routes import router

__all__ = ["install_problem_handlers", "router"]
