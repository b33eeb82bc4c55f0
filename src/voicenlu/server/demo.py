"""The demo page at / and its static files: nothing is loaded from elsewhere."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
STATIC_PREFIX = "/static/"
# The page loads nothing from elsewhere; the policy keeps it that way.
POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


def add_demo_page(app: FastAPI) -> None:
    """Serve the page at / and its files under /static/."""

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": POLICY})

    app.mount(STATIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="static")
