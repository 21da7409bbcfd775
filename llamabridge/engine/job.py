"""A Job is one request on a cache: its prompt, its state, its own cancel flag and its own mailbox.

Jobs are made by Cache (chat) and generate_batch (raw prompts) and run by the cache's Scheduler, which
posts the job's events to it; a job never calls into the scheduler. Nothing one job's client does can touch
another job: cancelling (Scheduler.cancel) names the job.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .mailbox import Mailbox
from .output import OutputReader
from .request import ChatRequest, ReasoningDelta, RenderedChat, TextDelta, ToolCallStart

if TYPE_CHECKING:
    from .generation import Generation

_ids = itertools.count(1)
_OUTPUT = (TextDelta, ReasoningDelta, ToolCallStart)     # what a client sees of the answer


class JobState(enum.Enum):
    QUEUED = "queued"
    PROMPT = "prompt"
    GENERATE = "generate"
    DONE = "done"


@dataclass(frozen=True)
class JobSpec:
    """What a job runs: prompt tokens, a token budget, and how to sample and read the output.

    request/rendered are None for a raw prompt (generate_batch).
    """

    prompt: list[int]
    max_tokens: int
    sampling: dict[str, Any]
    request: ChatRequest | None = None
    rendered: RenderedChat | None = None
    stop: tuple[str, ...] = ()
    saved: Any = None        # a LoadedPrefix read from disk for this prompt before it was queued
    sampler: Any = None      # the native Sampler built in prepare (None: the Generation builds one)


class Job:
    def __init__(self, spec: JobSpec, mailbox: Mailbox, post: Callable[[list], bool], *, session: str | None = None,
                 label: str = "") -> None:
        """`post(items)` puts a list of events (or an exception) in `mailbox` for the consumer, True when
        the consumer must be woken (the scheduler then wakes it). Made on the consumer's side: a chat's
        parser is built here."""
        self.id = next(_ids)
        self.spec = spec
        self.output = OutputReader.for_chat(spec.request, spec.rendered)    # the consumer's, see read()
        # a digest of the client's session key: keeps its conversation on one slot (saved with it)
        self.session = hashlib.sha256(session.encode()).hexdigest() if session is not None else None
        self.label = label                # for log lines: what the request was
        self.state = JobState.QUEUED
        self.cancelled = False
        self.finish_prompt = False        # on cancel during the prompt: finish it into the slot if nobody waits
        self.cached_tokens = 0            # prompt tokens reused or copied from the KV
        # its consumer has had output (set by the consumer; till then the worker wakes it at once)
        self.answered = False
        self.generation: Generation | None = None
        self.prompt_started = 0.0
        self.prompt_seconds = 0.0
        # (slot, its job, tokens): wait for that slot to evaluate the prefix we share, then copy it
        self.follow: tuple[Any, Job | None, int] | None = None
        self.mailbox = mailbox
        self.post = post
        self.ended = threading.Event()

    @property
    def prompt(self) -> list[int]:
        return self.spec.prompt

    def read(self, items: list) -> list:
        """The consumer's side of what the scheduler posts: the items, a chat's raw output parsed into events
        (output.py). A parser failure is the job's error: the consumer ends there and cancels the job."""
        try:
            events = items if self.output is None else self.output.read(items)
        except Exception as exc:  # noqa: BLE001 - this job only
            return [exc]
        if not self.answered and any(isinstance(e, _OUTPUT) for e in events):
            self.answered = True
        return events

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.state.value}{', cancelled' if self.cancelled else ''})"
