"""A local HTTP server speaking enough of the Hugging Face Hub's protocol for ``snapshot_download``.

Serves ``/api/models/{repo}[/revision/{rev}]`` (JSON with ``sha`` and ``siblings``, with
sizes, git blob ids and LFS sha256 when ``?blobs=true``) and ``/{repo}/resolve/{rev}/{file}``
(HEAD/GET with ``ETag``, ``X-Repo-Commit``, ``Content-Length`` and ``Range`` support).
``cut_after`` makes the first GET of a file drop the connection after that many bytes,
to exercise resume.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_MIN_BYTES = 1024  # files at least this big are served as LFS files


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class HubState:
    repos: dict[str, dict[str, bytes]]
    cut_after: int | None = None
    corrupt: set[str] = field(default_factory=set)  # files served with a flipped byte
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    _cut_done: set[str] = field(default_factory=set)

    def meta(self, name: str, data: bytes) -> dict:
        d = {"rfilename": name, "size": len(data), "blobId": _blob_id(data)}
        if len(data) >= LFS_MIN_BYTES:
            d["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return d


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _json(self, obj: object, code: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _route(self) -> None:
            path = unquote(urlsplit(self.path).path)
            state.requests.append((self.command, path, self.headers.get("Range")))
            if path.startswith("/api/models/"):
                rest = path[len("/api/models/"):]
                repo = rest.split("/revision/")[0].split("/tree/")[0]
                if repo not in state.repos:
                    return self._not_found()
                files = state.repos[repo]
                if "/tree/" in rest:  # list_repo_tree (one page, no Link header)
                    entries = []
                    for n, d in sorted(files.items()):
                        m = state.meta(n, d)
                        e = {"type": "file", "path": n, "size": len(d), "oid": m["blobId"]}
                        if "lfs" in m:
                            e["lfs"] = {"oid": m["lfs"]["sha256"], "size": len(d), "pointerSize": 134}
                        entries.append(e)
                    return self._json(entries)
                return self._json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                   "siblings": [state.meta(n, d) for n, d in sorted(files.items())]})
            if "/resolve/" in path:
                repo, _, tail = path.lstrip("/").partition("/resolve/")
                _rev, _, name = tail.partition("/")
                data = state.repos.get(repo, {}).get(name)
                if data is None:
                    return self._not_found()
                meta = state.meta(name, data)
                etag = meta["lfs"]["sha256"] if "lfs" in meta else meta["blobId"]
                if name in state.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command == "HEAD":
                    return None
                key = f"{repo}/{name}"
                if state.cut_after is not None and key not in state._cut_done and len(body) > state.cut_after:
                    state._cut_done.add(key)
                    self.wfile.write(body[: state.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                self.wfile.write(body)
                return None
            return self._not_found()

        do_GET = _route
        do_HEAD = _route

    return Handler


class HubServer:
    def __init__(self, state: HubState) -> None:
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
