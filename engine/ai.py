"""The AI provider: Chat Completions with tool calls, through the `openai` SDK.

Works with OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio) via
`STEPLINE_AI_BASE_URL`. The SDK retries 429 and 5xx answers with backoff; what still fails
becomes an `AI_PROVIDER_ERROR` that says what to fix.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import openai

from domain.errors import StandardError

COMPLETE_STEP = "complete_step"
FAIL_STEP = "fail_step"


class AiProviderError(Exception):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.error = StandardError.of("AI_PROVIDER_ERROR", message, details)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    reasoning: str
    call: ToolCall | None
    malformed: str | None
    """Why the reply could not be used as a tool call, if it could not."""
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int


def finishing_tools(expect: str | None) -> list[dict[str, Any]]:
    """complete_step and fail_step; with an expect criterion, completing must confirm it."""
    complete_properties: dict[str, Any] = {
        "summary": {"type": "string", "description": "what was done, in one sentence"},
        "evidence": {
            "type": "array",
            "items": {"type": "string"},
            "description": "observations that show the step succeeded",
        },
    }
    required = ["summary"]
    if expect:
        complete_properties["expect_met"] = {
            "type": "boolean",
            "description": f"true only if this holds, shown by the evidence: {expect}",
        }
        required.append("expect_met")
    return [
        {
            "type": "function",
            "function": {
                "name": COMPLETE_STEP,
                "description": "The current step is done.",
                "parameters": {
                    "type": "object",
                    "properties": complete_properties,
                    "required": required,
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": FAIL_STEP,
                "description": "The current step cannot be done.",
                "parameters": {
                    "type": "object",
                    "properties": {"reason": {"type": "string"}},
                    "required": ["reason"],
                },
            },
        },
    ]


def _parse_call(message: Any, offered: set[str]) -> tuple[ToolCall | None, str | None]:
    calls = message.tool_calls or []
    if not calls:
        return None, "the reply called no tool; every reply must call exactly one tool"
    function = calls[0].function
    if function.name not in offered:
        return None, f"there is no tool named {function.name!r}; use one of {sorted(offered)}"
    try:
        arguments = json.loads(function.arguments or "{}")
    except json.JSONDecodeError as error:
        return None, f"the arguments of {function.name} are not valid JSON: {error.msg}"
    if not isinstance(arguments, dict):
        return None, f"the arguments of {function.name} must be a JSON object"
    return ToolCall(function.name, arguments), None


class AiProvider:
    def __init__(
        self,
        model: str,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )

    def close(self) -> None:
        self.client.close()

    def decide(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Decision:
        started = time.monotonic()
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                tools=tools,  # type: ignore[arg-type]
            )
        except openai.APIError as error:
            raise self._explained(error) from None
        latency_ms = int((time.monotonic() - started) * 1000)
        if not response.choices:
            raise AiProviderError("the AI provider answered with no choices")
        message = response.choices[0].message
        offered = {tool["function"]["name"] for tool in tools}
        call, malformed = _parse_call(message, offered)
        usage = response.usage
        return Decision(
            reasoning=message.content or "",
            call=call,
            malformed=malformed,
            model=response.model or self.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
        )

    def _explained(self, error: openai.APIError) -> AiProviderError:
        where = self.base_url or "the OpenAI API"
        if isinstance(error, openai.AuthenticationError):
            return AiProviderError(
                f"{where} refused the API key (401); check STEPLINE_AI_API_KEY", status=401
            )
        if isinstance(error, openai.NotFoundError):
            return AiProviderError(
                f"model {self.model!r} was not found at {where} (404); check STEPLINE_AI_MODEL",
                status=404,
            )
        if isinstance(error, openai.RateLimitError):
            return AiProviderError(f"{where} kept rate-limiting (429) after retries", status=429)
        if isinstance(error, openai.APIStatusError):
            return AiProviderError(
                f"{where} answered {error.status_code}: {error.message}",
                status=error.status_code,
            )
        if isinstance(error, openai.APITimeoutError):
            return AiProviderError(f"{where} did not answer in time")
        return AiProviderError(f"cannot reach {where}: {error.message}")
