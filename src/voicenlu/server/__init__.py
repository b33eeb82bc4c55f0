"""HTTP API: serve a bundle's parser with FastAPI and uvicorn.

POST /parse, /parse/batch and /model/parse (Rasa's shape) answer parse results (DESIGN section 4);
GET /health, /ready, /metadata and /metrics (Prometheus) are for operators; GET / is a demo page.
Every bad request gets a 4xx JSON answer ``{"error": "...", "detail": [...]}`` that says what is
wrong, so clients never have to read a 500 to find their own mistake.

One module per concern: ``schemas`` (request and response bodies), ``batching`` (the model
thread and the micro-batcher), ``metrics`` (Prometheus), ``limits`` (every limit, and the
HTTP protocol that enforces those uvicorn lacks), ``guard`` (API key, admission and body
checks before FastAPI), ``demo`` (the page at /), ``app`` (the FastAPI app) and ``run``
(settings and uvicorn).
"""

from voicenlu.config import Limits
from voicenlu.server.app import create_app
from voicenlu.server.run import SETTINGS_ENV, app_from_env, serve
from voicenlu.server.schemas import to_rasa

__all__ = [
    "SETTINGS_ENV",
    "app_from_env",
    "create_app",
    "Limits",
    "serve",
    "to_rasa",
]
