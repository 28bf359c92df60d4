"""JSON Schemas of the API's bodies (OpenAPI 3.1 components), written to match what the handlers
accept and answer; the options schema comes from the ``Options`` dataclass itself."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ferrousforge.mold import Capability
from ferrousforge.names import NAME_PATTERN
from ferrousforge.options import IGNORED_OPTIONS, KV_CACHE_TYPES, Options
from ferrousforge.tools import TOOL_NAME

Schema = dict[str, Any]
END = r"(?![\s\S])"  # the end of the text: "$" also matches before a final newline in Python's regexes

STRING: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
NONEMPTY: Schema = {"type": "string", "minLength": 1}
ANY_OBJECT: Schema = {"type": "object"}
NANOSECONDS: Schema = {"type": "integer", "minimum": 0, "description": "nanoseconds"}
TOKEN: Schema = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    """An object with these properties; others are allowed (clients send fields of newer APIs)."""
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def array(items: Schema, min: int | None = None, max: int | None = None) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if min is not None:
        out["minItems"] = min
    if max is not None:
        out["maxItems"] = max
    return out


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def options_schema() -> Schema:
    """Ollama's generation options with the ranges the server enforces."""
    props: dict[str, Schema] = {}
    for f in fields(Options):
        if f.name == "stop":
            props[f.name] = {
                "anyOf": [
                    {"type": "string", "maxLength": 1000},
                    array({"type": "string", "maxLength": 1000}, max=16),
                ]
            }
            continue
        if choices := f.metadata.get("choices"):  # engine, kv_cache_type, flash_attention
            props[f.name] = nullable({"enum": list(choices), "default": f.default})
            continue
        bound = f.metadata.get("range")
        kind = "integer" if f.type == "int" else "number"
        schema: Schema = {"type": kind, "default": f.default}
        if bound is not None:
            schema |= {"minimum": bound.low, "maximum": bound.high}
        props[f.name] = nullable(schema)
    ignored = {"description": "accepted for Ollama clients and ignored"}
    props |= {name: ignored for name in sorted(IGNORED_OPTIONS)}
    return {"type": "object", "properties": props, "additionalProperties": False}


MODEL_NAME: Schema = {
    "type": "string",
    "pattern": NAME_PATTERN,
    "description": "a model name such as gemma3:270m or namespace/model:tag",
    "examples": ["gemma3:270m"],
}
KEEP_ALIVE: Schema = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^(?:[+-]?(?:\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+))?" + END,
        },
        NUMBER,
    ],
    "description": "how long the model stays loaded: a duration ('5m', '1h') or seconds; negative: forever",
}
FORMAT: Schema = {"anyOf": [{"enum": ["", "json"]}, ANY_OBJECT], "description": '"json" or a JSON schema'}
DONE_REASON: Schema = {"enum": ["stop", "length", "load", "unload"]}
ACCELERATOR: Schema = {
    "type": "string",
    "examples": ["cpu", "cuda"],
    "description": "what computed the answer on the host: cpu, cuda, vulkan or metal",
}
TIMINGS: Schema = {
    "total_duration": NANOSECONDS,
    "load_duration": NANOSECONDS,
    "prompt_eval_count": INT,
    "prompt_eval_duration": NANOSECONDS,
    "eval_count": INT,
    "eval_duration": NANOSECONDS,
    "accelerator": ACCELERATOR,
}
COMMON_GENERATION: Schema = {
    "model": MODEL_NAME,
    "options": ref("Options"),
    "keep_alive": KEEP_ALIVE,
    "stream": {"type": "boolean", "default": True},
    "format": FORMAT,
    "think": nullable({"anyOf": [BOOL, {"enum": ["low", "medium", "high"]}]})
    | {"description": "true/false or a level; on a model without the 'thinking' capability → 400"},
    "logprobs": BOOL,
    "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
    "truncate": {"type": "boolean", "default": True},
    "shift": {"type": "boolean", "default": True},
}
TOP_LOGPROB: Schema = obj(("token", "logprob"), token=STRING, logprob=NUMBER, bytes=array(INT))
LOGPROBS: Schema = array(
    obj(("token", "logprob"), token=STRING, logprob=NUMBER, bytes=array(INT), top_logprobs=array(TOP_LOGPROB))
)
CONTENT_PARTS: Schema = array(
    {
        "anyOf": [
            obj(("type", "text"), type={"enum": ["text", "input_text", "output_text"]}, text=STRING),
            obj(
                ("type", "image_url"),
                type={"const": "image_url"},
                image_url=obj(("url",), url={"type": "string", "pattern": "^data:[^,]*,"}),
            ),
        ]
    }
)
TOOL: Schema = obj(
    ("type", "function"),
    type={"const": "function"},
    function=obj(
        ("name",),
        name={"type": "string", "pattern": f"^{TOOL_NAME}{END}"},
        description=STRING,
        parameters=ANY_OBJECT,
    ),
)
TOOL_CHOICE: Schema = {
    "anyOf": [
        {"enum": ["none", "auto", "required"]},
        obj(("type", "function"), type={"const": "function"}, function=obj(("name",), name=STRING)),
    ],
    "description": "an object names one of 'tools'",
}
TOOL_CALL: Schema = obj(("function",), id=STRING, function=obj(("name",), name=STRING, arguments=ANY_OBJECT))
MESSAGE: Schema = obj(
    ("role",),
    role={"enum": ["system", "user", "assistant", "tool"]},
    content={"anyOf": [STRING, CONTENT_PARTS]},
    images=array(STRING),
    tool_calls=array(TOOL_CALL),
    tool_name=STRING,
    tool_call_id=STRING,
    thinking=STRING,
    name=STRING,
)
DETAILS: Schema = obj(
    parent_model=STRING,
    format=STRING,
    family=STRING,
    families=array(STRING),
    parameter_size=STRING,
    quantization_level=STRING,
)
PROGRESS: Schema = obj(("status",), status=STRING, digest=STRING, total=INT, completed=INT, error=STRING)
MODEL_MESSAGE: Schema = obj(
    ("role", "content"), role={"enum": ["system", "user", "assistant"]}, content=STRING
)
OPENAI_SAMPLING: Schema = {
    "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2}),
    "top_p": nullable({"type": "number", "minimum": 0, "maximum": 1}),
    "seed": nullable({"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1}),
    "presence_penalty": nullable({"type": "number", "minimum": -2, "maximum": 2}),
    "frequency_penalty": nullable({"type": "number", "minimum": -2, "maximum": 2}),
    "max_tokens": nullable({"type": "integer", "minimum": 1}),
    "max_completion_tokens": nullable({"type": "integer", "minimum": 1}),
    "stop": nullable({"anyOf": [STRING, array(STRING, max=16)]}),
    "n": nullable({"type": "integer", "minimum": 1, "maximum": 64})
    | {"description": "choices, generated side by side; with a seed, choice i samples with seed + i"},
    "logit_bias": {
        "type": "object",
        "propertyNames": {"pattern": "^[0-9]{1,9}$"},
        "maxProperties": 1024,
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        "description": "token id → added to its logit (-100 bans it, 100 all but forces it)",
    },
    "stream": BOOL,
    "stream_options": obj(include_usage=BOOL),
    "response_format": {
        "anyOf": [
            obj(("type",), type={"enum": ["text", "json_object"]}),
            obj(
                ("type", "json_schema"),
                type={"const": "json_schema"},
                json_schema=obj(("schema",), name=STRING, schema=ANY_OBJECT, strict=BOOL),
            ),
        ]
    },
}
USAGE: Schema = obj(
    ("prompt_tokens", "total_tokens"), prompt_tokens=INT, completion_tokens=INT, total_tokens=INT
)
FINISH_REASON: Schema = nullable({"enum": ["stop", "length", "tool_calls"]})
OPENAI_CALL: Schema = obj(
    ("id", "type", "function"),
    id=STRING,
    type={"const": "function"},
    function=obj(("name", "arguments"), name=STRING, arguments=STRING),
)
OPENAI_MODEL: Schema = obj(
    ("id", "object", "created", "owned_by"),
    id=STRING,
    object={"const": "model"},
    created=INT,
    owned_by=STRING,
)
BLOB_FILE: Schema = obj(("digest", "size", "url"), digest=STRING, size=INT, url=STRING)


def openai_reply(kind: str, required: tuple[str, ...], **choice: Schema) -> Schema:
    """An OpenAI completion object: its envelope, and one choice with these fields."""
    return obj(
        ("id", "object", "created", "model", "choices"),
        id=STRING,
        object={"const": kind},
        created=INT,
        model=STRING,
        system_fingerprint=STRING,
        choices=array(
            obj(required, index=INT, **choice, logprobs=nullable(ANY_OBJECT), finish_reason=FINISH_REASON)
        ),
        usage=USAGE,
    )


COMPONENTS: dict[str, Schema] = {
    "Error": obj(("error",), error=STRING),
    "OpenAIError": obj(
        ("error",),
        error=obj(
            ("message", "type"), message=STRING, type=STRING, param=nullable(STRING), code=nullable(STRING)
        ),
    ),
    "Options": options_schema(),
    "GenerateRequest": obj(
        ("model",),
        **COMMON_GENERATION,
        prompt=STRING,
        suffix=STRING,
        system=nullable(STRING),
        template=nullable(STRING),
        raw=BOOL,
        images=array(STRING),
        context=array(TOKEN),
    ),
    "GenerateResponse": obj(
        ("model", "created_at", "response", "done"),
        model=STRING,
        created_at={"type": "string", "format": "date-time"},
        response=STRING,
        thinking=STRING,
        done=BOOL,
        done_reason=DONE_REASON,
        context=array(INT),
        logprobs=LOGPROBS,
        **TIMINGS,
    ),
    "Message": MESSAGE,
    "ChatRequest": obj(
        ("model",),
        **COMMON_GENERATION,
        messages=array(ref("Message")),
        tools=array(TOOL),
        tool_choice=TOOL_CHOICE,
    ),
    "ChatResponse": obj(
        ("model", "created_at", "message", "done"),
        model=STRING,
        created_at={"type": "string", "format": "date-time"},
        message=obj(
            ("role", "content"),
            role={"const": "assistant"},
            content=STRING,
            thinking=STRING,
            tool_calls=array(TOOL_CALL),
        ),
        done=BOOL,
        done_reason=DONE_REASON,
        logprobs=LOGPROBS,
        **TIMINGS,
    ),
    "ModelRequest": obj(("model",), model=MODEL_NAME, name=MODEL_NAME, verbose=BOOL),
    "CopyRequest": obj(("source", "destination"), source=MODEL_NAME, destination=MODEL_NAME),
    "PullRequest": obj(
        ("model",),
        model=MODEL_NAME,
        name=MODEL_NAME,
        source={"type": "string", "description": "a URL, an absolute path in an import folder, or hf.co/..."},
        insecure=BOOL,
        stream={"type": "boolean", "default": True},
    ),
    "PushRequest": obj(
        ("model",),
        model=MODEL_NAME,
        name=MODEL_NAME,
        insecure=BOOL,
        stream={"type": "boolean", "default": True},
    ),
    "CreateRequest": obj(
        ("model",),
        model=MODEL_NAME,
        **{"from": MODEL_NAME},
        files={"type": "object", "additionalProperties": STRING, "description": "file name → sha256:<hex>"},
        adapters={
            "type": "object",
            "additionalProperties": STRING,
            "description": "LoRA adapter GGUFs applied over the model: file name → sha256:<hex>",
        },
        modelfile=STRING,
        template=STRING,
        system=STRING,
        parameters=ANY_OBJECT,
        license={"anyOf": [STRING, array(STRING)]},
        messages=array(MODEL_MESSAGE)
        | {"description": "a conversation every chat with the model starts from"},
        quantize={"type": "string", "description": "q4_K_M, q8_0, ...: quantize an F32/F16/BF16 GGUF"},
        stream={"type": "boolean", "default": True},
    )
    | {"anyOf": [{"required": ["from"]}, {"required": ["files"]}, {"required": ["modelfile"]}]},
    "Progress": PROGRESS,
    "Tags": obj(
        ("models",),
        models=array(
            obj(
                ("name", "model", "modified_at", "size", "digest", "details"),
                name=STRING,
                model=STRING,
                modified_at=STRING,
                size=INT,
                digest=STRING,
                details=DETAILS,
            )
        ),
    ),
    "Show": obj(
        ("modelfile", "parameters", "template", "details", "model_info", "capabilities"),
        modelfile=STRING,
        parameters=STRING,
        template=STRING,
        system=STRING,
        license=STRING,
        messages=array(MODEL_MESSAGE),
        details=DETAILS,
        model_info=ANY_OBJECT,
        projector_info=ANY_OBJECT,  # a vision model's projector (its GGUF metadata)
        capabilities=array({"enum": [c.value for c in Capability]}),
        modified_at=STRING,
    ),
    "Info": obj(
        ("cpu", "gpus", "engines", "models"),
        cpu=obj(
            ("model", "arch", "cores", "instruction_sets"),
            model=STRING,
            arch=STRING,
            cores=INT,
            instruction_sets=array(STRING),
        ),
        gpus=array(
            obj(
                ("api", "name"),
                api={"enum": ["cuda", "vulkan", "metal"]},
                name=STRING,
                driver=STRING,
                total_memory=nullable(INT),
                free_memory=nullable(INT),
                software={"type": "boolean", "description": "a CPU device (Vulkan's lavapipe)"},
            )
            | {"description": "memory in bytes where the driver tells it"}
        ),
        engines=array(
            obj(
                ("engine", "package", "gpu_offload", "runs_on"),
                engine=STRING,
                package=STRING,
                flavour=nullable(STRING),
                gpu_offload={"type": "boolean"},
                devices=array(STRING) | {"description": "llama.cpp's devices: CPU, CUDA0, Vulkan0..."},
                runs_on=ACCELERATOR,
            )
        ),
        models=array(
            obj(
                ("name", "engine", "accelerator"),
                name=STRING,
                engine=STRING,
                accelerator=ACCELERATOR,
                adapter={"type": "string", "description": "the GPU adapter of the wgpu engine"},
                runner_pid=INT,
                kv_cache_type={"type": "string", "enum": list(KV_CACHE_TYPES), "description": "llama.cpp's"},
            )
        ),
    ),
    "Running": obj(
        ("models",),
        models=array(
            obj(
                ("name", "model", "size", "digest", "details", "expires_at", "context_length"),
                name=STRING,
                model=STRING,
                size=INT,
                size_vram=INT,
                engine={"type": "string", "examples": ["llama.cpp", "onnxruntime", "wgpu"]},
                adapter=STRING,
                digest=STRING,
                details=DETAILS,
                expires_at=nullable(STRING),
                context_length=nullable(INT),
            )
        ),
    ),
    "EmbedRequest": obj(
        ("model",),
        model=MODEL_NAME | {"examples": ["all-minilm"]},
        input={"anyOf": [STRING, array(STRING, max=2048)]},
        truncate={"type": "boolean", "default": True},
        dimensions={"type": "integer", "minimum": 1},
        keep_alive=KEEP_ALIVE,
        options=ref("Options"),
    ),
    "EmbedResponse": obj(
        ("model", "embeddings"),
        model=STRING,
        embeddings=array(array(NUMBER)),
        total_duration=NANOSECONDS,
        load_duration=NANOSECONDS,
        prompt_eval_count=INT,
        accelerator=ACCELERATOR,
    ),
    "LegacyEmbeddingRequest": obj(
        ("model", "prompt"),
        model=MODEL_NAME | {"examples": ["all-minilm"]},
        prompt=STRING,
        keep_alive=KEEP_ALIVE,
        options=ref("Options"),
    ),
    "LegacyEmbeddingResponse": obj(("embedding",), embedding=array(NUMBER)),
    "OpenAIEmbeddingRequest": obj(
        ("model", "input"),
        model=MODEL_NAME | {"examples": ["all-minilm"]},
        input={
            "anyOf": [
                NONEMPTY,
                array(NONEMPTY, min=1, max=2048),
                array(TOKEN, min=1),
                array(array(TOKEN, min=1), min=1, max=2048),
            ]
        },
        encoding_format={"enum": ["float", "base64"]},
        dimensions={"type": "integer", "minimum": 1},
        user=STRING,
    ),
    "OpenAIEmbeddingResponse": obj(
        ("object", "data", "model", "usage"),
        object={"const": "list"},
        data=array(
            obj(
                ("object", "index", "embedding"),
                object={"const": "embedding"},
                index=INT,
                embedding={"anyOf": [array(NUMBER), STRING]},
            )
        ),
        model=STRING,
        usage=USAGE,
    ),
    "RerankRequest": obj(
        ("model", "query", "documents"),
        model=MODEL_NAME | {"examples": ["all-minilm"]},
        query=STRING,
        documents=array({"anyOf": [STRING, obj(("text",), text=STRING)]}, max=2048),
        top_n={"type": "integer", "minimum": 1},
        return_documents={"type": "boolean", "default": True},
        truncate={"type": "boolean", "default": True},
        keep_alive=KEEP_ALIVE,
        options=ref("Options"),
    ),
    "RerankResponse": obj(
        ("model", "results", "usage"),
        model=STRING,
        results=array(
            obj(
                ("index", "relevance_score"),
                index=INT,
                relevance_score=NUMBER,
                document=obj(("text",), text=STRING),
            )
        ),
        usage=obj(("total_tokens",), total_tokens=INT),
    ),
    "ChatCompletionRequest": obj(
        ("model", "messages"),
        model=MODEL_NAME,
        messages=array(
            obj(
                ("role",),
                role={"enum": ["system", "developer", "user", "assistant", "tool"]},
                content={"anyOf": [STRING, {"type": "null"}, CONTENT_PARTS]},
                tool_calls=array(OPENAI_CALL),
                tool_call_id=STRING,
                name=STRING,
            ),
            min=1,
        ),
        tools=array(TOOL),
        tool_choice=TOOL_CHOICE,
        logprobs=nullable(BOOL),
        top_logprobs=nullable({"type": "integer", "minimum": 0, "maximum": 20}),
        reasoning_effort=nullable({"enum": ["none", "minimal", "low", "medium", "high"]}),
        **OPENAI_SAMPLING,
    ),
    "ChatCompletion": openai_reply(
        "chat.completion",
        ("index", "message", "finish_reason"),
        message=obj(
            ("role",),
            role={"const": "assistant"},
            content=nullable(STRING),
            reasoning=STRING,
            tool_calls=array(OPENAI_CALL),
        ),
    ),
    "CompletionRequest": obj(
        ("model", "prompt"),
        model=MODEL_NAME,
        prompt={"anyOf": [STRING, array(STRING, min=1, max=64)]}
        | {"description": "prompts; choices in order, a prompt's n together, at most 64 in all"},
        suffix=nullable(STRING) | {"description": "fill-in-the-middle; a model without FIM tokens → 400"},
        logprobs=nullable({"type": "integer", "minimum": 0, "maximum": 20}),
        echo=BOOL
        | {"description": "the prompt first; with logprobs, its tokens scored (max_tokens 0: it alone)"},
        **{
            **OPENAI_SAMPLING,
            "max_tokens": nullable({"type": "integer", "minimum": 0}) | {"description": "0 only with echo"},
        },
    ),
    "Completion": openai_reply("text_completion", ("index", "text", "finish_reason"), text=STRING),
    "ModelList": obj(("object", "data"), object={"const": "list"}, data=array(OPENAI_MODEL)),
    "Model": OPENAI_MODEL,
    "ModelDeleted": obj(("id", "object", "deleted"), id=STRING, object={"const": "model"}, deleted=BOOL),
    "BrowserModelRequest": obj(("model",), model=MODEL_NAME),
    "BrowserModel": obj(
        ("model", "kind", "format", "files", "config", "requirements"),
        model=STRING,
        kind={"enum": ["generate", "embed", "rerank"]},
        format={"enum": ["gguf", "onnx"]},
        files={"type": "object", "additionalProperties": BLOB_FILE},
        config=ANY_OBJECT,
        template=nullable(STRING),
        system=nullable(STRING),
        parameters=ANY_OBJECT,
        requirements=obj(
            ("bytes", "memory"),
            bytes=INT,
            memory=INT,
            gflop_per_item=NUMBER,
            min_items_per_s=NUMBER,
            features=array(STRING),
            needs_threads=BOOL,
        ),
    ),
    "Version": obj(("version",), version=STRING, ferrousforge=STRING),
}
