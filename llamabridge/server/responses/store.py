"""Stored responses (`store: true`): in memory, bounded by size, oldest out first.

Each entry keeps the response object and the input it answered (previous turns included),
so `previous_response_id` can continue a conversation and `GET /v1/responses/{id}` can
return it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class StoredResponse:
    response: dict
    input_items: list[dict]       # the whole conversation before this response's output
    size: int


class ResponseStore:
    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._items: dict[str, dict] = {}          # output item id -> item (for item_reference)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response: dict, input_items: list[dict]) -> None:
        size = len(json.dumps(response)) + len(json.dumps(input_items))
        entry = StoredResponse(response, input_items, size)
        with self._lock:
            self._remove(response["id"])
            self._entries[response["id"]] = entry
            self.bytes += size
            for item in response["output"]:
                self._items[item["id"]] = item
            while self.bytes > self.max_bytes and len(self._entries) > 1:
                self._remove(next(iter(self._entries)))

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is not None:
                self._entries.move_to_end(response_id)
            return entry

    def item(self, item_id: str) -> dict | None:
        with self._lock:
            return self._items.get(item_id)

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._remove(response_id)

    def _remove(self, response_id: str) -> bool:
        entry = self._entries.pop(response_id, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        for item in entry.response["output"]:
            self._items.pop(item["id"], None)
        return True
