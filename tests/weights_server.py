"""A publisher's download server on 127.0.0.1 for the weights tests: Zenodo's record API, S3 (an
ETag that is the file's md5, HEAD), GitHub's release API, and files served with HTTP Range
requests, as the real ones serve them. The `server` fixture points the toolkit's addresses at it and
its weights cache at the test's folder; `srv.requests` records what was asked."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    api: dict[str, dict]
    requests: list[tuple[str, str, str | None]]


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, head_only: bool) -> None:
        srv: _Server = self.server
        srv.requests.append((self.command, self.path, self.headers.get("Range")))
        if self.path in srv.api:
            body = json.dumps(srv.api[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
        self.end_headers()
        if not head_only:
            self.wfile.write(data[start:])

    def do_GET(self):
        self._send(False)

    def do_HEAD(self):
        self._send(True)


@pytest.fixture
def server(tmp_path, monkeypatch):
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.api, srv.requests = {}, {}, []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    monkeypatch.setenv("HPA_ZENODO_URL", base)
    monkeypatch.setenv("HPA_SUBCELL_URL", base)
    monkeypatch.setenv("HPA_GITHUB_API_URL", base)
    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    yield srv, base
    srv.shutdown()
    srv.server_close()
