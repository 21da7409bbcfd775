"""A fake Hugging Face Hub on loopback: only the endpoints huggingface_hub calls to download a repo."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "a" * 40


class FakeHub:
    """repos: {repo_id: {path: bytes}}; `token`: when set, every request must carry it."""

    def __init__(self, repos: dict[str, dict[str, bytes]], token: str | None = None) -> None:
        self.repos = repos
        self.token = token
        self.requests: list[tuple[str, str, dict]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routing

    def handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlparse(req.path).path)
        self.requests.append((req.command, path, dict(req.headers)))
        if self.token and req.headers.get("authorization") != f"Bearer {self.token}":
            return self.error(req, 401, "Invalid credentials", "RepoNotFound")
        m = re.fullmatch(r"/api/models/(.+?)/revision/([^/]+)", path)
        if m:
            return self.repo_info(req, m.group(1), m.group(2))
        m = re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(/.*)?", path)
        if m:
            return self.tree(req, m.group(1), m.group(2))
        m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if m:
            return self.resolve(req, m.group(1), m.group(2), m.group(3), head)
        self.error(req, 404, f"no fake route for {path}", "EntryNotFound")

    def repo(self, req, repo_id: str, revision: str):
        files = self.repos.get(repo_id)
        if files is None:
            self.error(req, 404, "Repository not found", "RepoNotFound")
            return None
        if revision not in ("main", COMMIT):
            self.error(req, 404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return None
        return files

    def repo_info(self, req, repo_id: str, revision: str) -> None:
        files = self.repo(req, repo_id, revision)
        if files is not None:
            self.json(req, {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False, "disabled": False,
                            "gated": False, "downloads": 0, "likes": 0, "tags": [],
                            "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                            "siblings": [{"rfilename": name} for name in sorted(files)]})

    def tree(self, req, repo_id: str, revision: str) -> None:
        files = self.repo(req, repo_id, revision)
        if files is not None:
            self.json(req, [{"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": name}
                            for name, data in sorted(files.items())])

    def resolve(self, req, repo_id: str, revision: str, name: str, head: bool) -> None:
        files = self.repo(req, repo_id, revision)
        if files is None:
            return
        if name not in files:
            return self.error(req, 404, "Entry not found", "EntryNotFound")
        data = files[name]
        start = 0
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-", req.headers.get("range") or "")
        if match and not head:
            start = int(match.group(1))
            status = 206
        req.send_response(status)
        req.send_header("X-Repo-Commit", COMMIT)
        req.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        req.end_headers()
        if not head:
            req.wfile.write(data[start:])

    def json(self, req, body) -> None:
        payload = json.dumps(body).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)

    def error(self, req, status: int, message: str, code: str) -> None:
        payload = json.dumps({"error": message}).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("X-Error-Code", code)
        req.send_header("X-Error-Message", message)
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(payload)
