"""Headers on every response. The chat page signs itself in and holds an admin token, so no
other site may frame it, no script but its own may run in it, and no browser may guess a
response's type; the API answers carry the same (they are never meant to be rendered)."""

from __future__ import annotations

from aiohttp import web

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # 'self' covers the page's own ws:// and wss:// too (CSP Level 3).
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: it also reaches static files and error pages, which
    no middleware sees. A handler that set one of these headers itself keeps its own."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
