"""The Python engine over _core: models, caches, one chat request type, one event stream."""

from .batch import BatchResult, generate_batch
from .cache import Cache, ChatStream, plan_max_tokens
from .job import Job, JobSpec, JobState
from .model import Model
from .params import GREEDY, CacheParams, ModelParams, SamplingParams, ThinkingParams
from .request import (
    ChatRequest, Done, Event, PreparedChat, PromptProgress, PromptReady, ReasoningDelta, TextDelta, Timings, ToolCallDelta,
    ToolCallEnd, ToolCallStart, Usage,
)
from .sequence import Sequence, common_prefix_length
from .stops import StopMatcher

__all__ = [
    "BatchResult", "Cache", "CacheParams", "ChatStream", "Job", "JobSpec", "JobState", "Sequence", "ChatRequest", "Done", "Event", "GREEDY", "Model", "ModelParams",
    "PreparedChat", "PromptProgress", "PromptReady", "ReasoningDelta", "SamplingParams", "StopMatcher", "TextDelta", "ThinkingParams",
    "Timings", "ToolCallDelta", "ToolCallEnd", "ToolCallStart", "Usage", "common_prefix_length", "generate_batch",
    "plan_max_tokens",
]
