"""The local web server of the annotation page (Python's ``http.server``, one thread per request).

It serves three static files shipped in this package (``static/index.html``, ``app.js``,
``style.css``: no build step, nothing fetched from elsewhere) and hands every ``/api/`` request to
an :class:`~experts.annotation.service.AnnotationService`. Nothing else is served: the static files
are looked up by exact name in a fixed table, so no request can read another file. It binds to
127.0.0.1 unless told otherwise; a port in use is refused with one line.

Example:
    >>> server = make_server(service, host="127.0.0.1", port=8765)
    >>> print(page_url(server, service.token)); server.serve_forever()
"""

from __future__ import annotations

import errno
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from experts.errors import ConfigError

__all__ = ["make_server", "page_url", "STATIC"]

#: request path -> (file in static/, content type); nothing else is served
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"), "/style.css": ("style.css", "text/css; charset=utf-8")}


def _static(name: str) -> bytes:
    return resources.files("experts.annotation").joinpath("static", name).read_bytes()


def make_server(service, *, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server for ``service`` bound to ``host:port`` (port 0: any free port).

    Raises:
        ConfigError: the port is in use or the address cannot be bound.
    """

    class Handler(BaseHTTPRequestHandler):
        server_version = "expertseg-annotate"
        sys_version = ""

        def log_message(self, fmt, *args):  # quiet: the command prints what matters
            pass

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

        def _answer(self, method: str):
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if method == "GET" and url.path in STATIC:
                name, kind = STATIC[url.path]
                return self._send(200, _static(name), kind, {"Cache-Control": "no-store"})
            if not url.path.startswith("/api/"):
                return self._send(404, b"not found", "text/plain; charset=utf-8", {})
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > service_limit():
                return self._send(413, b'{"error": "request body too large or its length unreadable"}', "application/json", {})
            body = self.rfile.read(length) if length else b""
            token = self.headers.get("X-Expertseg-Token") or query.pop("token", None)
            query.pop("token", None)
            r = service.handle(method, url.path, query=query, body=body, token=token)
            self._send(r.status, r.body, r.content_type, r.headers)

        def _send(self, status, body: bytes, kind: str, headers: dict):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'")
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    def service_limit() -> int:
        from experts.annotation.service import MAX_BODY

        return MAX_BODY

    try:
        server = ThreadingHTTPServer((host, int(port)), Handler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another annotate page?); pass --port with a free port, or stop the program using it") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}); pass --host 127.0.0.1 and a free --port") from None
    server.daemon_threads = True
    return server


def page_url(server: ThreadingHTTPServer, token: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/?token={token}"
