"""The API documentation pages, served offline: ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc).

FastAPI's own pages load their JavaScript and CSS from a CDN, so on a machine without internet access
``/docs`` is blank. Here the assets come from the ``fastapi-offline`` wheel (part of the ``serve`` extra,
MIT licensed, Swagger UI 5, which reads OpenAPI 3.1) and are served by the app itself under
``/docs/assets/``. Without that package, ``/docs`` is a plain page, built from the OpenAPI schema with no
script and no outside link, listing each route and pointing to ``/openapi.json``.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

logger = logging.getLogger(__name__)

__all__ = ["ASSETS_URL", "add_offline_docs", "asset_folder"]

ASSETS_URL = "/docs/assets"
#: the only files served from the asset folder, with their media types
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def asset_folder() -> Path | None:
    """The folder of the Swagger UI / ReDoc assets (``fastapi_offline/static``), or None when the
    ``fastapi-offline`` package is not installed (or lacks a file).

    Example:
        >>> folder = asset_folder()
        >>> folder is None or (folder / "swagger-ui-bundle.js").is_file()
        True
    """
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    missing = [name for name in _ASSETS if not (folder / name).is_file()]
    if missing:
        logger.warning("fastapi-offline at %s lacks %s; /docs falls back to a plain page", folder, missing)
        return None
    return folder


def _plain_page(app: FastAPI) -> str:
    """Every route of the schema as an HTML list: no script, no stylesheet, nothing fetched."""
    rows = []
    for path, methods in app.openapi().get("paths", {}).items():
        for method, operation in methods.items():
            route = html.escape(f"{method.upper()} {path}")
            rows.append(f"<li><code>{route}</code> {html.escape(operation.get('summary', ''))}</li>")
    title = html.escape(app.title)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title} API</title></head><body>"
        f"<h1>{title} API</h1><p>{html.escape(app.description or '')}</p><ul>{''.join(rows)}</ul>"
        "<p>The full schema: <a href='/openapi.json'>/openapi.json</a>. For the interactive page, install "
        "the serve extra (<code>pip install 'mm-rerank-components[serve]'</code>, which brings "
        "<code>fastapi-offline</code>) and restart the server.</p></body></html>"
    )


def add_offline_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and ``/docs/assets/{name}`` to ``app``, whose
    own ``docs_url`` and ``redoc_url`` must be None.

    Example:
        >>> app = FastAPI(docs_url=None, redoc_url=None)
        >>> add_offline_docs(app)
        >>> sorted(r.path for r in app.routes if r.path.startswith("/docs"))[:2]
        ['/docs', '/docs/assets/{name}']
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("add_offline_docs: create the app with docs_url=None and redoc_url=None")
    folder = asset_folder()
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if folder is None:
            return HTMLResponse(_plain_page(app))
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=redirect,
            # Swagger UI would send the schema to an online validator for its badge: never
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        if folder is None:
            return HTMLResponse(_plain_page(app))
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Any:
        media_type = _ASSETS.get(name)
        if folder is None or media_type is None:  # a fixed list: no path from the URL reaches the disk
            raise HTTPException(404, f"no documentation asset {name!r}")
        return FileResponse(folder / name, media_type=media_type, headers={"Cache-Control": "max-age=86400"})
