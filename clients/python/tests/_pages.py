"""A local test site on 127.0.0.1 (``http.server`` in a thread): the browser-session site of the
stack and a scripted API for the retry rules.

Routes:
- ``GET /page``: an HTML page showing the ``sid`` cookie it received and setting ``visits``
  (one more than received), so a browser's storage state changes.
- ``ANY /once401/{key}``: 401 ``invalid_token`` for the first request of ``key``, then 200.
- ``ANY /bare401/{key}``: 401 without any challenge for the first request of ``key``, then 200.
- ``ANY /forbidden``: always 403 (with an ``insufficient_scope`` challenge).
- ``ANY /scope``: always 401 ``insufficient_scope``.
- ``ANY /echo``: 200 with the method, body length, ``Cookie`` and all headers as JSON.
Every request is recorded (path, method, Authorization, body) in ``hits``.
"""

from __future__ import annotations

import html
import json
import threading
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


class Hit:
    def __init__(self, method: str, path: str, authorization: Optional[str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.authorization = authorization
        self.body = body


class _Handler(BaseHTTPRequestHandler):
    server: PageServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Optional[Dict[str, str]] = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _handle(self) -> None:
        body = self._body()
        path = self.path.split("?", 1)[0]
        self.server.record(Hit(self.command, path, self.headers.get("authorization"), body))
        if path == "/page":
            cookies = SimpleCookie(self.headers.get("cookie") or "")
            sid = cookies["sid"].value if "sid" in cookies else "none"
            visits = int(cookies["visits"].value) + 1 if "visits" in cookies else 1
            body_html = f"<p id='sid'>{html.escape(sid)}</p>"
            page = f"<html><head><title>portal</title></head><body>{body_html}</body></html>"
            self._send(200, page.encode(), "text/html", {"set-cookie": f"visits={visits}; Path=/"})
        elif path.startswith(("/once401/", "/bare401/")):
            first = self.server.first_time(path)
            if first and path.startswith("/once401/"):
                challenge = 'Bearer realm="pages", error="invalid_token", error_description="expired"'
                self._json(401, {"ok": False}, {"www-authenticate": challenge})
            elif first:
                self._json(401, {"ok": False})
            else:
                self._json(200, {"ok": True, "body_len": len(body)})
        elif path == "/forbidden":
            self._json(403, {"ok": False}, {"www-authenticate": 'Bearer error="insufficient_scope"'})
        elif path == "/scope":
            self._json(
                401, {"ok": False}, {"www-authenticate": 'Bearer error="insufficient_scope", scope="admin"'}
            )
        elif path == "/echo":
            headers = {k.lower(): v for k, v in self.headers.items()}
            echo = {"method": self.command, "body_len": len(body), "cookie": self.headers.get("cookie")}
            self._json(200, {**echo, "headers": headers})
        else:
            self._json(404, {"ok": False})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: List[Hit] = []
        self._seen: set = set()
        self._lock = threading.Lock()
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def first_time(self, path: str) -> bool:
        with self._lock:
            if path in self._seen:
                return False
            self._seen.add(path)
            return True

    def hits_for(self, path: str) -> List[Hit]:
        with self._lock:
            return [hit for hit in self.hits if hit.path == path]

    def close(self) -> None:
        self.shutdown()
        self.server_close()
