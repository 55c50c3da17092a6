"""The conversation every client test holds, whatever the client and the persona type.

Every persona type answers by the echo provider's rules (tests/fakes/auto.py), so the
expected values are the same everywhere: a forced ``get_weather`` call gets
:data:`WEATHER_ARGS`, the follow-up turn echoes :data:`TOOL_RESULT`, and structured output is
:data:`WEATHER_PARSED`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tests.clients.conftest import PersonaEnv

QUESTION = "What is the weather in Paris?"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
WEATHER_ARGS = {"city": "echo", "unit": "celsius"}
TOOL_RESULT = "22 degrees and sunny"


class Weather(BaseModel):
    city: str
    temperature: float
    conditions: list[str]


WEATHER_PARSED = Weather(city="echo", temperature=0.0, conditions=[])


def check_upstream_round_trips(
    env: PersonaEnv, mark: int, call_ids: list[str], *, only: bool = True
) -> None:
    """What the upstream received since ``mark``: for each tool call the client made (in
    order), a follow-up request that carried the question, the assistant's call with its
    arguments, and the tool's result paired with that call. With ``only``, nothing else was
    sent but the first request of each round trip, which offered the tool."""
    if env.upstream is None:
        return  # offline persona: its answer (the echoed result) is the evidence
    sent = env.sent_since(mark)
    followups = [s for s in sent if s.tool_results]
    assert [(s.tool_calls, s.tool_results) for s in followups] == [
        ([(env.wire_id(c), "get_weather", WEATHER_ARGS)], [(env.wire_id(c), TOOL_RESULT)])
        for c in call_ids
    ]
    for s in followups:
        assert s.messages[0] == ("user", QUESTION) and s.messages[-1] == ("tool", TOOL_RESULT)
    if only:
        assert len(sent) == 2 * len(call_ids)
        assert all(s.tools == ["get_weather"] for s in sent)
        assert all(("user", QUESTION) in s.messages for s in sent)
