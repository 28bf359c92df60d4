"""JSON Schemas of OpenAI's Responses API and Anthropic's Messages API bodies, as this server
accepts and answers them (components added to ``schemas.COMPONENTS`` by the document)."""

from __future__ import annotations

from ferrousforge.protocol.responses import EFFORTS
from ferrousforge.tools import TOOL_NAME
from ferrousforge_host.openapi.schemas import (
    ANY_OBJECT,
    BOOL,
    END,
    INT,
    MODEL_NAME,
    OPENAI_SAMPLING,
    STRING,
    Schema,
    array,
    nullable,
    obj,
)

FUNCTION_NAME: Schema = {"type": "string", "pattern": f"^{TOOL_NAME}{END}"}
MAX_TOKENS: Schema = {"type": "integer", "minimum": 1}
SAMPLING = {k: OPENAI_SAMPLING[k] for k in ("temperature", "top_p")}

# OpenAI's Responses API
TEXT_PART = obj(("type", "text"), type={"enum": ["input_text", "output_text"]}, text=STRING)
IMAGE_PART = obj(
    ("type", "image_url"),
    type={"const": "input_image"},
    image_url={"type": "string", "pattern": "^data:[^,]*,", "description": "a data: URL"},
    detail=STRING,
)
INPUT_MESSAGE = obj(
    ("role", "content"),
    type={"const": "message"},
    role={"enum": ["user", "assistant", "system", "developer"]},
    content={"anyOf": [STRING, array({"anyOf": [TEXT_PART, IMAGE_PART]})]},
)
FUNCTION_CALL = obj(
    ("type", "call_id", "name", "arguments"),
    type={"const": "function_call"},
    id=STRING,
    call_id=STRING,
    name=STRING,
    arguments={"type": "string", "description": "the arguments as JSON text"},
    status={"enum": ["in_progress", "completed", "incomplete"]},
)
FUNCTION_OUTPUT = obj(
    ("type", "call_id", "output"),
    type={"const": "function_call_output"},
    call_id=STRING,
    output={"anyOf": [STRING, array(TEXT_PART)]},
)
REASONING_TEXT = obj(("type", "text"), type={"enum": ["reasoning_text", "summary_text"]}, text=STRING)
REASONING = obj(
    ("type",),
    type={"const": "reasoning"},
    id=STRING,
    summary=array(REASONING_TEXT),
    content=nullable(array(REASONING_TEXT)),
)
TURN = {"anyOf": [INPUT_MESSAGE, FUNCTION_CALL, FUNCTION_OUTPUT]}
FLAT_TOOL = obj(
    ("type", "name"),
    type={"const": "function"},
    name=FUNCTION_NAME,
    description=nullable(STRING),
    parameters=nullable(ANY_OBJECT),
    strict=nullable(BOOL),
)
TEXT_FORMAT = {
    "anyOf": [
        obj(("type",), type={"enum": ["text", "json_object"]}),
        obj(
            ("type", "schema"),
            type={"const": "json_schema"},
            name=STRING,
            schema=ANY_OBJECT,
            strict=nullable(BOOL),
            description=STRING,
        ),
    ]
}
OUTPUT_TEXT = obj(("type", "text"), type={"const": "output_text"}, text=STRING, annotations=array(ANY_OBJECT))
ITEM_STATUS = {"enum": ["in_progress", "completed", "incomplete"]}
RESPONSES: dict[str, Schema] = {
    "ResponsesRequest": obj(
        ("model", "input"),
        model=MODEL_NAME,
        input={
            "anyOf": [
                STRING,
                array({"anyOf": [TURN, REASONING]}, min=1) | {"contains": TURN},
            ],
            "description": "a string, or message, reasoning, function_call and function_call_output items",
        },
        instructions=nullable(STRING),
        tools=array(FLAT_TOOL),
        tool_choice={
            "anyOf": [
                {"enum": ["none", "auto", "required"]},
                obj(("type", "name"), type={"const": "function"}, name=STRING),
            ],
            "description": "an object names one of 'tools'",
        },
        max_output_tokens=nullable(MAX_TOKENS),
        text=nullable(obj(format=nullable(TEXT_FORMAT))),
        reasoning=nullable(
            obj(effort=nullable({"enum": list(EFFORTS)}), summary=nullable(STRING))
            | {"description": "effort → think (a model that cannot think answers 400)"}
        ),
        stream=BOOL,
        store=BOOL,
        parallel_tool_calls=BOOL,
        truncation={"enum": ["auto", "disabled"]},
        metadata=nullable({"type": "object", "additionalProperties": STRING}),
        user=nullable(STRING),
        **SAMPLING,
    ),
    "Response": obj(
        ("id", "object", "created_at", "status", "model", "output"),
        id={"type": "string", "pattern": "^resp_"},
        object={"const": "response"},
        created_at=INT,
        status={"enum": ["completed", "incomplete", "in_progress", "failed"]},
        model=STRING,
        output=array(
            {
                "anyOf": [
                    obj(
                        ("id", "type", "role", "content", "status"),
                        id=STRING,
                        type={"const": "message"},
                        role={"const": "assistant"},
                        content=array(OUTPUT_TEXT),
                        status=ITEM_STATUS,
                    ),
                    obj(
                        ("id", "type", "summary"),
                        id=STRING,
                        type={"const": "reasoning"},
                        summary=array(ANY_OBJECT),
                        content=array(REASONING_TEXT),
                        status=ITEM_STATUS,
                    ),
                    FUNCTION_CALL | {"required": ["id", "type", "call_id", "name", "arguments", "status"]},
                ]
            }
        ),
        error=nullable(obj(("code", "message"), code=STRING, message=STRING)),
        incomplete_details=nullable(obj(("reason",), reason={"const": "max_output_tokens"})),
        usage=nullable(
            obj(
                ("input_tokens", "output_tokens", "total_tokens"),
                input_tokens=INT,
                output_tokens=INT,
                total_tokens=INT,
            )
        ),
    ),
}

# Anthropic's Messages API
TEXT_BLOCK = obj(("type", "text"), type={"const": "text"}, text=STRING)
IMAGE_BLOCK = obj(
    ("type", "source"),
    type={"const": "image"},
    source=obj(("type", "media_type", "data"), type={"const": "base64"}, media_type=STRING, data=STRING),
)
THINKING_BLOCK = obj(("type", "thinking"), type={"const": "thinking"}, thinking=STRING, signature=STRING)
TOOL_USE = obj(
    ("type", "id", "name", "input"), type={"const": "tool_use"}, id=STRING, name=STRING, input=ANY_OBJECT
)
TOOL_RESULT = obj(
    ("type", "tool_use_id"),
    type={"const": "tool_result"},
    tool_use_id=STRING,
    content={"anyOf": [STRING, array(TEXT_BLOCK)]},
    is_error=BOOL,
)
REDACTED = obj(("type", "data"), type={"const": "redacted_thinking"}, data=STRING)
ANTHROPIC_MESSAGE = {
    "anyOf": [
        obj(
            ("role", "content"),
            role={"const": "user"},
            content={"anyOf": [STRING, array({"anyOf": [TEXT_BLOCK, IMAGE_BLOCK, TOOL_RESULT]})]},
        ),
        obj(
            ("role", "content"),
            role={"const": "assistant"},
            content={"anyOf": [STRING, array({"anyOf": [TEXT_BLOCK, TOOL_USE, THINKING_BLOCK, REDACTED]})]},
        ),
    ]
}
ANTHROPIC_TOOL = obj(
    ("name", "input_schema"),
    type={"const": "custom"},
    name=FUNCTION_NAME,
    description=STRING,
    input_schema=ANY_OBJECT,
)
ANTHROPIC_PROMPT: dict[str, Schema] = {
    "model": MODEL_NAME,
    "messages": array(ANTHROPIC_MESSAGE, min=1),
    "system": {"anyOf": [STRING, array(TEXT_BLOCK)]},
    "tools": array(ANTHROPIC_TOOL),
    "tool_choice": {
        "anyOf": [
            obj(("type",), type={"enum": ["auto", "any", "none"]}, disable_parallel_tool_use=BOOL),
            obj(("type", "name"), type={"const": "tool"}, name=STRING, disable_parallel_tool_use=BOOL),
        ],
        "description": "{type: tool} names one of 'tools'",
    },
    "thinking": {
        "anyOf": [
            obj(("type", "budget_tokens"), type={"const": "enabled"}, budget_tokens=INT),
            obj(("type",), type={"enum": ["disabled", "adaptive", "between_tools"]}),
        ],
        "description": "→ think (a model that cannot think answers 400 unless disabled)",
    },
    "output_config": obj(
        format=nullable(obj(("type", "schema"), type={"const": "json_schema"}, schema=ANY_OBJECT))
    ),
}
STOP_REASON = nullable({"enum": ["end_turn", "max_tokens", "tool_use", "stop_sequence"]})
ANTHROPIC: dict[str, Schema] = {
    "AnthropicError": obj(
        ("type", "error"),
        type={"const": "error"},
        error=obj(("type", "message"), type=STRING, message=STRING),
    ),
    "MessagesRequest": obj(
        ("model", "messages", "max_tokens"),
        **ANTHROPIC_PROMPT,
        max_tokens=MAX_TOKENS,
        stop_sequences=array({"type": "string", "maxLength": 1000}, max=16),
        top_k={"type": "integer", "minimum": 0},
        stream=BOOL,
        metadata=obj(user_id=nullable(STRING)),
        temperature={"type": "number", "minimum": 0, "maximum": 1},  # Anthropic's range
        top_p=SAMPLING["top_p"],
    ),
    "AnthropicMessage": obj(
        ("id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"),
        id={"type": "string", "pattern": "^msg_"},
        type={"const": "message"},
        role={"const": "assistant"},
        model=STRING,
        content=array({"anyOf": [TEXT_BLOCK, THINKING_BLOCK, TOOL_USE]}),
        stop_reason=STOP_REASON,
        stop_sequence=nullable(STRING),
        usage=obj(("input_tokens", "output_tokens"), input_tokens=INT, output_tokens=INT),
    ),
    "CountTokensRequest": obj(("model", "messages"), **ANTHROPIC_PROMPT),
    "TokenCount": obj(("input_tokens",), input_tokens=INT),
}
