"""The AI provider: Chat Completions with tool calls, through the `openai` SDK.

Works with OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio) via
`STEPLINE_AI_BASE_URL`. The SDK retries 429 (honouring `Retry-After`), 5xx, timeouts and
refused connections with backoff; what still fails becomes an error of its own kind (its code
and suggested action say what to do). A reply that is not exactly one valid tool call is a
`Mistake`, told to the model on its next turn.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from domain.errors import StandardError
from engine.ai.coercion import coerced

if TYPE_CHECKING:
    import openai

COMPLETE_STEP = "complete_step"
FAIL_STEP = "fail_step"
REQUEST_APPROVAL = "request_approval"


OUTAGES = frozenset({"AI_RATE_LIMITED", "AI_PROVIDER_UNAVAILABLE", "AI_TIMEOUT", "AI_UNREACHABLE"})
"""Provider errors that say nothing about the request: wait and try again later."""


class AiProviderError(Exception):
    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.error = StandardError.of(code, message, details)

    @property
    def outage(self) -> bool:
        return self.error.code in OUTAGES


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    coercions: tuple[str, ...] = ()
    """How arguments that did not fit were read to fit (see `engine.ai.coercion`)."""


@dataclass(frozen=True)
class Mistake:
    """Why a reply could not be used as a tool call: told to the model on its next turn."""

    code: str
    reason: str
    tool: str | None = None


@dataclass(frozen=True)
class Decision:
    reasoning: str
    call: ToolCall | None
    mistake: Mistake | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int


def finishing_tools(
    expect: str | None, error_status: int | None = None, data: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """complete_step and fail_step; with an expect criterion, completing must confirm it; after
    a request that failed on its `error_status`, completing must name it as expected; for a
    step that extracts, completing must give the `data` (of that JSON Schema)."""
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
    if error_status is not None:
        complete_properties["expected_status"] = {
            "type": "integer",
            "description": f"{error_status}, only if the last request's {error_status} answer "
            "is what this step is meant to show",
        }
    if data is not None:
        complete_properties["data"] = {
            "description": "the data this step asks for, read from what the tools showed",
            **data,
        }
        required.append("data")
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


def approval_tool() -> dict[str, Any]:
    """request_approval: offered when the workflow lets the model ask (`approvals: model`)."""
    return {
        "type": "function",
        "function": {
            "name": REQUEST_APPROVAL,
            "description": "Ask a person to approve before you go on (e.g. before an action "
            "that spends money or cannot be undone). The session waits for their answer; "
            "approved, you are told so and go on; rejected, the step fails.",
            "parameters": {
                "type": "object",
                "properties": {
                    "question": {"type": "string", "description": "what the person approves"}
                },
                "required": ["question"],
            },
        },
    }


def _parse_call(message: Any, tools: list[dict[str, Any]]) -> ToolCall | Mistake:
    """The one tool call of a reply, from `tool_calls` or, failing that, from its text."""
    calls = message.tool_calls or []
    if len(calls) > 1:
        names = [call.function.name for call in calls]
        return Mistake(
            "MODEL_MANY_TOOL_CALLS",
            f"the reply called {len(calls)} tools {names}; call exactly one tool per reply",
        )
    if calls:
        return _checked(calls[0].function.name, calls[0].function.arguments or "{}", tools)
    found = tool_call_in_text(message.content or "")
    if found is None:
        return Mistake(
            "MODEL_NO_TOOL_CALL",
            "the reply called no tool; every reply must call exactly one of the tools offered",
        )
    return _checked(*found, tools)


TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
FENCED = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def tool_call_in_text(content: str) -> tuple[str, str] | None:
    """(name, raw arguments) of a tool call written as text, as some OpenAI-compatible servers
    return it: `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Hermes, Qwen), or the
    whole reply as that JSON object, bare or in a ```json fence."""
    tagged = TOOL_CALL_TAG.search(content)
    text = tagged.group(1) if tagged else content.strip()
    fenced = FENCED.match(text)
    text = fenced.group(1) if fenced else text
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("function"), dict):
        data = data["function"]
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return data["name"], raw


def _checked(name: str, raw_arguments: str, tools: list[dict[str, Any]]) -> ToolCall | Mistake:
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
    if name not in schemas:
        return Mistake(
            "MODEL_UNKNOWN_TOOL",
            f"there is no tool named {name!r}; use one of {sorted(schemas)}",
            tool=name,
        )
    try:
        arguments = json.loads(raw_arguments)
    except json.JSONDecodeError as error:
        return Mistake(
            "MODEL_BAD_ARGUMENTS",
            f"the arguments of {name} are not valid JSON: {error.msg} at character {error.pos}",
            tool=name,
        )
    problem = schema_problem(arguments, schemas[name])
    if problem is not None and isinstance(arguments, dict):
        forgiven = coerced(arguments, schemas[name])
        if forgiven.notes and schema_problem(forgiven.arguments, schemas[name]) is None:
            return ToolCall(name, forgiven.arguments, forgiven.notes)
    if problem is not None:
        return Mistake(
            "MODEL_BAD_ARGUMENTS",
            f"the arguments of {name} do not fit its parameters: {problem}",
            tool=name,
        )
    return ToolCall(name, arguments)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def schema_problem(arguments: Any, schema: dict[str, Any]) -> str | None:
    """What is wrong with the arguments against the tool's (flat) JSON schema, if anything:
    an object, every required property present, each property of its type and enum."""
    if not isinstance(arguments, dict):
        return "they must be a JSON object"
    required, properties = schema.get("required"), schema.get("properties")
    required = required if isinstance(required, list) else []  # a server's schema may be odd
    properties = properties if isinstance(properties, dict) else {}
    missing = [key for key in required if isinstance(key, str) and key not in arguments]
    if missing:
        return f"missing required {missing}"
    for key, value in arguments.items():
        spec = properties.get(key)
        if not isinstance(spec, dict):
            continue
        kind, enum = spec.get("type"), spec.get("enum")
        expected = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
        wrong_bool = isinstance(value, bool) and kind in ("integer", "number")
        if expected is not None and (not isinstance(value, expected) or wrong_bool):
            return f"{key} must be of type {kind}"
        if isinstance(enum, list) and value not in enum:
            return f"{key} must be one of {enum}"
    return None


class AiProvider:
    def __init__(
        self,
        model: str,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        import openai  # noqa: PLC0415 - 1.2 s to import: only processes that call a model pay

        self.model = model
        self.base_url = base_url
        self.client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )

    def close(self) -> None:
        self.client.close()

    def decide(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Decision:
        import openai  # noqa: PLC0415 - imported by __init__ already

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
            raise AiProviderError("AI_PROVIDER_ERROR", "the AI provider answered with no choices")
        message = response.choices[0].message
        parsed = _parse_call(message, tools)
        usage = response.usage
        return Decision(
            reasoning=message.content or "",
            call=parsed if isinstance(parsed, ToolCall) else None,
            mistake=parsed if isinstance(parsed, Mistake) else None,
            model=response.model or self.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
        )

    def _explained(self, error: openai.APIError) -> AiProviderError:
        where = self.base_url or "the OpenAI API"
        status = getattr(error, "status_code", None)
        code = _code_of(error, status)
        message = {
            "AI_TIMEOUT": f"{where} did not answer in time",
            "AI_UNREACHABLE": f"cannot reach {where}: {error.message}",
            "AI_AUTH_FAILED": f"{where} refused the API key ({status})",
            "AI_MODEL_NOT_FOUND": f"model {self.model!r} was not found at {where} (404)",
            "AI_RATE_LIMITED": f"{where} kept rate-limiting (429) after retries",
            "AI_PROVIDER_UNAVAILABLE": f"{where} kept failing ({status}) after retries",
            "AI_CONTEXT_TOO_LONG": f"the prompt is longer than {self.model!r} takes",
        }.get(code, f"{where} answered {status}")
        return AiProviderError(code, f"{message}: {error.message}", status=status)


_BY_STATUS = {
    401: "AI_AUTH_FAILED",
    403: "AI_AUTH_FAILED",
    404: "AI_MODEL_NOT_FOUND",
    429: "AI_RATE_LIMITED",
}


def _code_of(error: openai.APIError, status: int | None) -> str:
    import openai  # noqa: PLC0415 - imported by AiProvider already

    if isinstance(error, openai.APITimeoutError):
        return "AI_TIMEOUT"
    if isinstance(error, openai.APIConnectionError):
        return "AI_UNREACHABLE"
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status is not None and status >= 500:
        return "AI_PROVIDER_UNAVAILABLE"
    return "AI_CONTEXT_TOO_LONG" if _context_too_long(error) else "AI_PROVIDER_ERROR"


def _context_too_long(error: openai.APIError) -> bool:
    text = f"{error.code or ''} {error.message}".lower()
    return "context_length" in text or "context length" in text or "too many tokens" in text
