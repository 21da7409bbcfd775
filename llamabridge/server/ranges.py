"""Value ranges the APIs document, as msgspec constraints: a value outside is a 400 naming the field."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]                 # top_p, min_p; Anthropic's temperature
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]              # OpenAI's temperature
NonNegative = Annotated[float, Meta(ge=0.0)]                      # Ollama's temperature, repeat_penalty
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]                 # presence / frequency penalties
TopK = Annotated[int, Meta(ge=0)]
TokenCount = Annotated[int, Meta(ge=1)]                           # max_tokens and the like
StopString = Annotated[str, Meta(min_length=1)]
LogitBias = Annotated[float, Meta(ge=-100.0, le=100.0)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]
ThinkingBudget = Annotated[int, Meta(ge=1)]     # Anthropic documents 1024 and up; small budgets suit small local models
