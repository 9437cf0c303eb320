"""``/docs``: the admin API's Swagger UI, from files vendored in the package
(``web/swagger-ui``, see its README), so the page works offline. FastAPI's own ``/docs``
loads them from a CDN and its ``/redoc`` too; both are turned off in ``create_app``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

SWAGGER_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "swagger-ui"
SWAGGER_UI_VERSION: Final = "5.35.0"
ASSETS: Final = {
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# The version is in the URL, so a file never changes under it.
_IMMUTABLE: Final = {"cache-control": "public, max-age=31536000, immutable"}


def install_api_docs(app: FastAPI, *, path: str = "/docs") -> None:
    """``path`` (Swagger UI over the app's OpenAPI document), its OAuth2 redirect page and
    the vendored assets under ``path/assets/<version>/``."""
    assets = f"{path}/assets/{SWAGGER_UI_VERSION}"
    redirect = f"{path}/oauth2-redirect"
    title = f"{app.title} API"

    @app.get(path, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            # Swagger UI would send the document to an online validator for its badge.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(assets + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no such Swagger UI file: {name!r}")
        return FileResponse(SWAGGER_DIR / name, media_type=ASSETS[name], headers=_IMMUTABLE)
