"""Saved prefixes: the KV states of sequences that left their slots, kept in RAM and on disk.

A slot that is taken over by another conversation, or cleared to make room, hands its tokens
and KV state (llama_state_seq_get_data) to the store first; every slot does at shutdown. A new
request then starts from the longest prefix among the live slots and the store, restoring a
saved state (llama_state_seq_set_data) instead of evaluating those tokens again.

Two tiers, shared by every cache of the process (an entry only ever serves a cache with an equal
Fingerprint):
- RAM: bounded by `ram_bytes`, least recently used out. What leaves it goes to disk.
- disk: one file per entry in `state_dir` (see prefix_file), bounded by `disk_bytes`, least
  recently used (file mtime) out. Files are written by one background thread; at startup the
  directory is indexed (headers only) and each cache can load its newest entries back.

An entry is dropped when a longer one of the same conversation is saved (its tokens are a
prefix of the new one's), and a state is not saved when a live slot or an entry already holds
all of it. Bad files are skipped with one warning and removed; nothing reaches a context
without its checksum, size and fingerprint matching.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import prefix_file
from .choices import Choice
from .fingerprint import Fingerprint
from .prefix_file import BadPrefixFile, ChangedPrefixFile
from .private_files import private_dir

log = logging.getLogger("llamabridge.engine")

MB = 1 << 20
# shorter sequences are cheaper to evaluate again than to keep
MIN_TOKENS = 128


def shared_tokens(a: bytes, b: bytes) -> int:
    """Tokens two int32 token strings share from the start (memcmp speed, no Python loop per token)."""
    n = min(len(a), len(b)) // 4
    if a[:4 * n] == b[:4 * n]:
        return n
    lo, hi = 0, n - 1          # a[:4*lo] == b[:4*lo] and a[:4*(hi+1)] != b[:4*(hi+1)]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:4 * mid] == b[:4 * mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class Tier(Choice):
    """Where a saved prefix is kept (a str: /info and /metrics show the value)."""

    RAM = "ram"
    DISK = "disk"


@dataclass(eq=False)
class SavedPrefix:
    fingerprint: Fingerprint
    tokens: bytes                       # int32 LE
    size: int                           # bytes of KV state
    session: str | None                 # digest of the session key of the conversation it held
    last_used: float                    # time.time()
    data: bytes | bytearray | memoryview | None = None   # the state while in RAM or waiting to be written
    path: Path | None = None            # its file (being written while data is set)
    file_size: int = 0
    dropped: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.tokens) // 4

    @property
    def key(self) -> str:
        return self.fingerprint.key

    def token_list(self) -> list[int]:
        return prefix_file.tokens_of(self.tokens)

    @property
    def file(self) -> Path:
        """Its file; only an entry given to the disk tier has one."""
        if self.path is None:
            raise AssertionError("a saved prefix only in RAM has no file")
        return self.path


@dataclass
class LoadedPrefix:
    """A saved prefix's state in memory, ready for a context: `seconds` it took to get here."""

    entry: SavedPrefix
    data: bytes | bytearray | memoryview
    tier: Tier
    seconds: float = 0.0


@dataclass
class TierStats:
    restores: int = 0
    tokens: int = 0
    bytes: int = 0
    seconds: float = 0.0
    saves: int = 0

    def rate(self) -> float | None:
        """Bytes per second restored, once something was."""
        return self.bytes / self.seconds if self.seconds > 0 else None


@dataclass
class _Index:
    ram: OrderedDict = field(default_factory=OrderedDict)   # id -> entry, least recently used first
    disk: dict = field(default_factory=dict)                # file name -> entry
    ram_used: int = 0
    disk_used: int = 0


class PrefixStore:
    def __init__(self, ram_bytes: int = 0, state_dir: str | os.PathLike | None = None, disk_bytes: int = 0, *,
                 min_tokens: int = MIN_TOKENS, stall_save: Callable[[int, int], None] | None = None) -> None:
        self.ram_bytes = max(0, ram_bytes)
        self.state_dir = Path(state_dir).expanduser() if state_dir and disk_bytes > 0 else None
        self.disk_bytes = disk_bytes if self.state_dir else 0
        self.min_tokens = min_tokens
        self.stats = {Tier.RAM: TierStats(), Tier.DISK: TierStats()}
        self._stall_save = stall_save
        self._lock = threading.Lock()
        self._index = _Index()
        self._writes: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._closed = False
        if self.state_dir is not None:
            self._scan(self.state_dir)

    @property
    def enabled(self) -> bool:
        return self.ram_bytes > 0 or self.state_dir is not None

    # ------------------------------------------------------------ queries (any thread)

    def find(self, fingerprint: Fingerprint, prompt: bytes, in_memory: bool = False) \
            -> tuple[SavedPrefix | None, int]:
        """The entry sharing the longest prefix with `prompt` (int32 bytes), and that length; with
        `in_memory`, only entries whose state is in memory (RAM, or on its way to disk)."""
        with self._lock:
            candidates = [e for e in self._entries(fingerprint) if not in_memory or e.data is not None]
        best, n_best = None, 0
        for entry in candidates:          # RAM first: on a tie the entry already in memory wins
            n = shared_tokens(entry.tokens, prompt)
            if n > n_best:
                best, n_best = entry, n
        return best, n_best

    def covers(self, fingerprint: Fingerprint, tokens: bytes) -> bool:
        """Whether an entry already holds all of `tokens` (it is marked used if so)."""
        with self._lock:
            for entry in self._entries(fingerprint):
                if entry.tokens.startswith(tokens):
                    self._touch(entry)
                    return True
        return False

    def newest(self, fingerprint: Fingerprint, count: int) -> list[SavedPrefix]:
        """The most recently used entries of a fingerprint, newest first (for a restart's warm-up)."""
        with self._lock:
            entries = self._entries(fingerprint)
        return sorted(entries, key=lambda e: e.last_used, reverse=True)[:count]

    def load(self, entry: SavedPrefix) -> LoadedPrefix | None:
        """The entry's state in memory (RAM), or read and checked from its file (disk). A bad file
        is skipped with one warning and removed."""
        started = time.perf_counter()
        data = entry.data
        if data is not None:
            return LoadedPrefix(entry, data, Tier.RAM, 0.0)        # in RAM, or in memory on its way to disk
        try:
            header = prefix_file.read_header(entry.file)
            if header.fingerprint != entry.fingerprint.as_dict():
                raise ChangedPrefixFile("changed since it was indexed")
            tokens, state = prefix_file.read_body(entry.file, header)
            if tokens != entry.tokens:
                raise ChangedPrefixFile("changed since it was indexed")
        except ChangedPrefixFile as exc:         # rewritten or removed meanwhile (e.g. by another server)
            log.debug("saved prefix %s: %s", entry.file.name, exc)
            self._forget(entry, unlink=False)
            return None
        except BadPrefixFile as exc:
            log.warning("saved prefix %s skipped: %s", entry.file.name, exc)
            self._forget(entry, unlink=True)
            return None
        return LoadedPrefix(entry, state, Tier.DISK, time.perf_counter() - started)

    def discard(self, entry: SavedPrefix) -> None:
        """Forget an entry a context refused (and remove its file)."""
        with self._lock:
            if id(entry) in self._index.ram:
                self._drop_ram(entry)
                return
        if entry.path is not None:
            self._forget(entry, unlink=entry.data is None)

    def restored(self, loaded: LoadedPrefix, seconds: float) -> None:
        """Count a restore that took `seconds` (disk: the read included) and mark the entry used."""
        stats = self.stats[loaded.tier]
        with self._lock:
            stats.restores += 1
            stats.tokens += loaded.entry.n_tokens
            stats.bytes += loaded.entry.size
            stats.seconds += seconds
            self._touch(loaded.entry)

    def rate(self, tier: Tier) -> float | None:
        return self.stats[tier].rate()

    def info(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            ram: dict[str, Any] = {"entries": len(self._index.ram), "bytes": self._index.ram_used,
                                   "limit_bytes": self.ram_bytes}
            disk_entries = [e for e in self._index.disk.values() if not e.dropped]
            disk: dict[str, Any] = {"dir": str(self.state_dir) if self.state_dir else None,
                                    "entries": len(disk_entries), "bytes": self._index.disk_used,
                                    "limit_bytes": self.disk_bytes,
                                    "pending_writes": sum(1 for e in disk_entries if e.data is not None)}
        for name, tier in ((Tier.RAM, ram), (Tier.DISK, disk)):
            s = self.stats[name]
            rate = s.rate()
            tier.update(saves=s.saves, restores=s.restores, restored_tokens=s.tokens,
                        restore_mb_per_s=round(rate / MB, 1) if rate else None)
        return {Tier.RAM.value: ram, Tier.DISK.value: disk}

    # ------------------------------------------------------------ saving

    def put(self, fingerprint: Fingerprint, tokens: bytes, data, session: str | None) -> SavedPrefix | None:
        """Keep a state (its tokens as int32 bytes): in RAM, or on disk when RAM has no room for it."""
        if len(tokens) // 4 < self.min_tokens or not self.enabled or self._closed:
            return None
        entry = SavedPrefix(fingerprint, tokens, len(data), session, time.time(), data)
        with self._lock:
            for old in list(self._index.ram.values()):
                if old.key == entry.key and tokens.startswith(old.tokens):
                    self._drop_ram(old)                       # the same conversation, now longer
            if entry.size <= self.ram_bytes:
                self._index.ram[id(entry)] = entry
                self._index.ram_used += entry.size
                self.stats[Tier.RAM].saves += 1
                leaving = []
                while self._index.ram_used > self.ram_bytes:
                    oldest = next(iter(self._index.ram.values()))
                    self._drop_ram(oldest)
                    leaving.append(oldest)
            else:
                leaving = [entry]
            for gone in leaving:
                self._queue_write(gone)
        return entry

    def flush(self) -> None:
        """Write every RAM entry to disk (oldest first, so the newest survive the disk bound) and wait."""
        with self._lock:
            entries = sorted(self._index.ram.values(), key=lambda e: e.last_used)
            for entry in entries:
                self._drop_ram(entry)
                self._queue_write(entry)
        self.wait_writes()

    def wait_writes(self) -> None:
        if self._writer is not None:
            self._writes.join()

    def close(self) -> None:
        """Flush RAM to disk, finish the writes. Safe to call twice."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join()
            self._writer = None

    # ------------------------------------------------------------ startup

    def _scan(self, state_dir: Path) -> None:
        """Index the state directory: headers only; temporary files of an interrupted save and bad
        files are removed with a warning."""
        try:
            private_dir(state_dir)
            names = sorted(os.listdir(state_dir))
        except OSError as exc:
            log.warning("state dir %s unusable (%s): saved prefixes stay in RAM only", state_dir, exc.strerror)
            self.state_dir, self.disk_bytes = None, 0
            return
        for name in names:
            entry = self._indexed(name, state_dir / name)
            if entry is not None:
                self._index.disk[name] = entry
                self._index.disk_used += entry.file_size
        with self._lock:
            self._enforce_disk_bound()

    def _indexed(self, name: str, path: Path) -> SavedPrefix | None:
        """The entry of one name in the state directory, or None: whatever else is there (directories,
        fifos, symlinks, unreadable files, other files) is skipped with one line and never stops startup;
        a saved prefix that is damaged, and an interrupted save's temporary file, are removed."""
        if not name.endswith(prefix_file.SUFFIX) and not prefix_file.is_temporary(path):
            return None
        try:
            info = path.lstat()
        except OSError:
            return None                          # gone meanwhile
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a symlink" if stat.S_ISLNK(info.st_mode) \
                else "not a regular file"
            log.warning("saved prefix %s skipped: %s (left as it is)", name, kind)
            return None
        if prefix_file.is_temporary(path):
            if prefix_file.temporary_is_orphaned(path):
                self._remove(path, "(an interrupted save)")
            return None
        if not os.access(path, os.R_OK):
            log.warning("saved prefix %s skipped: not readable by this user (left as it is)", name)
            return None
        try:
            header = prefix_file.read_header(path)
            fingerprint = Fingerprint.from_dict(header.fingerprint)
            with open(path, "rb") as f:
                f.seek(header.data_offset)
                tokens = f.read(4 * header.n_tokens)
        except BadPrefixFile as exc:
            self._remove(path, f"skipped: {exc}")
            return None
        except (ValueError, TypeError, OSError):
            self._remove(path, "skipped: corrupt header")
            return None
        return SavedPrefix(fingerprint, tokens, header.state_bytes, header.session, info.st_mtime, path=path,
                           file_size=header.file_size)

    @staticmethod
    def _remove(path: Path, why: str) -> None:
        try:
            path.unlink(missing_ok=True)
            log.warning("saved prefix %s %s; removed", path.name, why)
        except OSError as exc:
            log.warning("saved prefix %s %s; could not be removed (%s)", path.name, why, exc.strerror)

    def report_unmatched(self, fingerprints: list[Fingerprint]) -> None:
        """Warn once about each file made for a model this process serves, but with another model file,
        n_ctx, KV type, template or build: no cache can use it."""
        keys = {f.key for f in fingerprints}
        by_path: dict[str, Fingerprint] = {}
        for f in fingerprints:
            by_path.setdefault(f.model_path, f)
        with self._lock:
            entries = [e for e in self._index.disk.values() if not e.dropped]
        other_models = 0
        for entry in entries:
            if entry.key in keys:
                continue
            here = by_path.get(entry.fingerprint.model_path)
            if here is None:
                other_models += 1
                continue
            log.warning("saved prefix %s skipped: made with %s", entry.file.name,
                        ", ".join(here.differences(entry.fingerprint)))
        if other_models:
            log.info("%d saved prefixes of other models in %s are kept, unused", other_models, self.state_dir)

    # ------------------------------------------------------------ internals (under the lock)

    def _entries(self, fingerprint: Fingerprint) -> list[SavedPrefix]:
        """A fingerprint's live entries, RAM first."""
        key = fingerprint.key
        return [e for e in [*self._index.ram.values(), *self._index.disk.values()] if e.key == key and not e.dropped]

    def _touch(self, entry: SavedPrefix) -> None:
        entry.last_used = time.time()
        if id(entry) in self._index.ram:
            self._index.ram.move_to_end(id(entry))
        elif entry.path is not None and entry.data is None:
            try:
                os.utime(entry.path, (entry.last_used, entry.last_used))
            except OSError:
                pass

    def _drop_ram(self, entry: SavedPrefix) -> None:
        del self._index.ram[id(entry)]
        self._index.ram_used -= entry.size

    def _queue_write(self, entry: SavedPrefix) -> None:
        """Hand an entry leaving RAM to the writer (dropped without a disk tier or when too big)."""
        if self.state_dir is None or entry.size > self.disk_bytes:
            return
        digest = hashlib.sha256(entry.tokens).hexdigest()[:20]
        name = f"{entry.key}-{digest}{prefix_file.SUFFIX}"
        previous = self._index.disk.get(name)
        if previous is not None:
            previous.dropped = True
            self._index.disk_used -= previous.file_size
        entry.path = self.state_dir / name
        self._index.disk[name] = entry
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="llamabridge-kv-writer", daemon=True)
            self._writer.start()
        self._writes.put(entry)

    def _forget(self, entry: SavedPrefix, unlink: bool) -> None:
        with self._lock:
            self._drop_disk(entry, unlink)

    def _drop_disk(self, entry: SavedPrefix, unlink: bool) -> None:
        """Take an entry out of the disk index (and its file off the disk)."""
        entry.dropped = True
        if self._index.disk.get(entry.file.name) is entry:
            del self._index.disk[entry.file.name]
            self._index.disk_used -= entry.file_size
        if unlink:
            entry.file.unlink(missing_ok=True)

    def _enforce_disk_bound(self) -> None:
        written = sorted((e for e in self._index.disk.values() if e.data is None), key=lambda e: e.last_used)
        for entry in written:
            if self._index.disk_used <= self.disk_bytes:
                break
            self._drop_disk(entry, unlink=True)

    # ------------------------------------------------------------ the writer thread

    def _write_loop(self) -> None:
        while True:
            entry = self._writes.get()
            try:
                if entry is None:
                    return
                if not entry.dropped:
                    self._write(entry)
            finally:
                self._writes.task_done()

    def _write(self, entry: SavedPrefix) -> None:
        started = time.perf_counter()
        try:
            size = prefix_file.write(entry.file, entry.fingerprint.as_dict(), entry.tokens, entry.data, entry.session,
                                     stall=self._stall_save)
            os.utime(entry.file, (entry.last_used, entry.last_used))
        except OSError as exc:
            log.warning("saving prefix %s failed: %s", entry.file.name, exc.strerror or exc)
            self._forget(entry, unlink=False)
            return
        with self._lock:
            entry.data, entry.file_size = None, size
            if entry.dropped:               # replaced while it was written
                return
            self._index.disk_used += size
            self.stats[Tier.DISK].saves += 1
            for other in [e for e in self._index.disk.values() if e is not entry and e.data is None]:
                if other.key == entry.key and entry.tokens.startswith(other.tokens):
                    self._drop_disk(other, unlink=True)      # the same conversation, now longer
            self._enforce_disk_bound()
        log.debug("saved prefix %s: %d tokens, %.1f MB in %.0f ms", entry.file.name, entry.n_tokens, size / MB,
                  1000 * (time.perf_counter() - started))
