"""--debug: four files per request under logs/ (request, prompt, raw output, response), secrets removed."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from pathlib import Path

SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}
_counter = itertools.count(1)
_lock = threading.Lock()


class DebugTrace:
    def __init__(self, directory: str, api: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        with _lock:
            n = next(_counter)
        self.stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{n:05d}-{api}"
        self.events: list[str] = []

    def _write(self, suffix: str, text: str) -> None:
        (self.dir / f"{self.stem}-{suffix}").write_text(text)

    def request(self, method: str, path: str, headers: dict, body: bytes) -> None:
        safe = {k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        self._write("1-request.json", json.dumps({"method": method, "path": path, "headers": safe, "body": parsed},
                                                 indent=2, ensure_ascii=False))

    def prompt(self, prepared) -> None:
        internal = dataclasses.asdict(prepared.request)
        self._write("2-prompt.txt", "# internal request\n" + json.dumps(internal, indent=2, ensure_ascii=False, default=str)
                    + f"\n\n# prompt ({prepared.prompt_tokens} tokens, max_tokens {prepared.max_tokens})\n"
                    + prepared.rendered.get("prompt", ""))

    def output(self, raw_text: str) -> None:
        self._write("3-output.txt", raw_text)

    def response(self, body: dict) -> None:
        self._write("4-response.json", json.dumps(body, indent=2, ensure_ascii=False))

    def stream_chunk(self, chunk: bytes) -> None:
        self.events.append(chunk.decode("utf-8", "replace"))

    def stream_done(self) -> None:
        self._write("4-response.sse", "".join(self.events))
