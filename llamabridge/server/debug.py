"""--debug: four files per request (request, prompt, raw output, response or error), secrets removed.

They hold whole conversations, so the directory is made 0700 and each file is written 0600, and what
could carry a secret is redacted: key headers, and the values of the query string.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from urllib.parse import parse_qsl

from ..engine.private_files import private_dir, write_private

SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}
_counter = itertools.count(1)
_lock = threading.Lock()


class DebugTrace:
    def __init__(self, directory: str, api: str) -> None:
        self.dir = private_dir(directory)
        with _lock:
            n = next(_counter)
        self.stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{n:05d}-{api}"
        self.events: list[str] = []

    def _write(self, suffix: str, text: str) -> None:
        write_private(self.dir / f"{self.stem}-{suffix}", text)

    def request(self, method: str, path: str, query: str, headers: dict, body: bytes) -> None:
        safe = {k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        record = {"method": method, "path": path, "query": {k: "<redacted>" for k, _ in parse_qsl(query)},
                  "headers": safe, "body": parsed}
        self._write("1-request.json", json.dumps(record, indent=2, ensure_ascii=False))

    def prompt(self, prepared) -> None:
        internal = dataclasses.asdict(prepared.request)
        self._write("2-prompt.txt", "# internal request\n"
                    + json.dumps(internal, indent=2, ensure_ascii=False, default=str)
                    + f"\n\n# prompt ({prepared.prompt_tokens} tokens, max_tokens {prepared.max_tokens})\n"
                    + prepared.rendered.prompt)

    def output(self, raw_text: str) -> None:
        self._write("3-output.txt", raw_text)

    def response(self, body: dict | bytes) -> None:
        """The answer's JSON: the response, or the error the request was answered with."""
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        self._write("4-response.json", json.dumps(body, indent=2, ensure_ascii=False))

    def stream_chunk(self, chunk: bytes) -> None:
        self.events.append(chunk.decode("utf-8", "replace"))

    def stream_done(self) -> None:
        self._write("4-response.sse", "".join(self.events))

