"""``teachloop view``: a read-only web viewer of a log (runs, lessons as conversations, pairs,
training and experiments).

    import teachloop.view
    asgi_app = teachloop.view.app("runs/demo.duckdb")   # mount it, or serve it with uvicorn

Needs the ``view`` extra (``pip install 'teachloop[view]'``: Starlette, Jinja2, uvicorn).
"""

from __future__ import annotations

from teachloop.view.server import serve
from teachloop.view.web import LOOPBACK_HOSTS, app

__all__ = ["LOOPBACK_HOSTS", "app", "serve"]
