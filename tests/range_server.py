"""A threaded HTTP server on 127.0.0.1 for download tests: in-memory files with strong ETags, Range and
If-Range (RFC 9110 semantics), and faults on demand: cut a response after N bytes, or stall."""
from __future__ import annotations

import hashlib
import http.server
import re
import threading


class RangeServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}     # path -> close the connection after this many body bytes
        self.stall_after: dict[str, int] = {}   # path -> send this many body bytes, then go silent
        self.requests: list[dict] = []          # headers of every request, for assertions
        self.release = threading.Event()        # ends stalls (set at shutdown)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, **dict(self.headers)})
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
                start = server._range_start(self.headers, etag, len(body))
                if start is not None and start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start is not None else 200)
                start = start or 0
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body) - start))
                if self.command == "GET" and start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                server._send(self, self.path, body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def _range_start(headers, etag: str, size: int) -> int | None:
        match = re.fullmatch(r"bytes=(\d+)-", headers.get("Range", ""))
        if not match:
            return None
        if headers.get("If-Range") not in (None, etag):  # the file changed: send all of it
            return None
        return int(match.group(1))

    def _send(self, handler, path: str, data: bytes) -> None:
        if path in self.stall_after:
            handler.wfile.write(data[: self.stall_after[path]])
            handler.wfile.flush()
            self.release.wait(30)
            return
        handler.wfile.write(data[: self.cut_after.get(path, len(data))])

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
