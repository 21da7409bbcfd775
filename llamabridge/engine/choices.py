"""The base of every enum whose members are named by their value: settings (flash_attn, overflow) and
states and kinds that /info, /metrics and log lines show (pool status, prefix tier)."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A str, so it compares, serializes and formats as its value (`f"{FlashAttn.ON}"` is "on"). Members
    are looked up by value (`FlashAttn("on")`); a dict keyed by members is not indexed by plain strings."""

    def __str__(self) -> str:
        return self.value
