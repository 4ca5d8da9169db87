"""Every span attribute key, event name and fixed value streamwatch's traces use, in one place.

The ``gen_ai.*`` keys follow the OpenTelemetry GenAI semantic conventions (inference client spans,
development status, as published in open-telemetry/semantic-conventions-genai). They are spelled
out here instead of imported from ``opentelemetry.semconv._incubating``: that module is private and
marks these names deprecated since they moved to their own repository. ``gen_ai.provider.name`` is
used, never the deprecated ``gen_ai.system``. ``streamwatch.*`` keys are ours; durations are seconds
(doubles), like ``gen_ai.response.time_to_first_chunk``.
"""

from __future__ import annotations

from typing import Final

from streamwatch.core.api import Api

# -- GenAI semantic conventions ------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
#: The finish reason of a stream that ended before its final event (the conventions' value).
FINISH_REASON_ERROR: Final = "error"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
# Opt-in content attributes (only with content capture on), JSON strings in the conventions' schema.
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
# OpenAI refinement: which OpenAI API a `chat` span used.
OPENAI_API_TYPE: Final = "openai.api.type"

OPERATION_CHAT: Final = "chat"  # chat completions, Responses, Anthropic Messages, Converse, ...
#: ``gen_ai.operation.name`` where it is not ``chat`` (well-known values of the conventions).
OPERATION_BY_API: Final[dict[Api, str]] = {
    Api.OPENAI_COMPLETIONS: "text_completion",
    Api.OLLAMA_GENERATE: "text_completion",
    Api.GEMINI: "generate_content",
    Api.GEMINI_JSON: "generate_content",
}
#: ``gen_ai.provider.name``: the conventions' well-known values; Gemini's path is the same on the
#: Gemini API and Vertex AI, hence ``gcp.gen_ai``; Ollama has no well-known value.
PROVIDER_BY_API: Final[dict[Api, str]] = {
    Api.OPENAI_CHAT: "openai",
    Api.OPENAI_RESPONSES: "openai",
    Api.OPENAI_COMPLETIONS: "openai",
    Api.ANTHROPIC_MESSAGES: "anthropic",
    Api.GEMINI: "gcp.gen_ai",
    Api.GEMINI_JSON: "gcp.gen_ai",
    Api.BEDROCK_CONVERSE: "aws.bedrock",
    Api.BEDROCK_INVOKE: "aws.bedrock",
    Api.OLLAMA_CHAT: "ollama",
    Api.OLLAMA_GENERATE: "ollama",
    Api.COHERE_V2: "cohere",
}
OPENAI_API_TYPE_BY_API: Final[dict[Api, str]] = {
    Api.OPENAI_CHAT: "chat_completions",
    Api.OPENAI_RESPONSES: "responses",
}

# -- general (stable) conventions ----------------------------------------------------------------
ERROR_TYPE: Final = "error.type"
ERROR_MESSAGE: Final = "error.message"
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# -- streamwatch ---------------------------------------------------------------------------------
SW_ROUTE: Final = "streamwatch.route"
SW_SIDE: Final = "streamwatch.side"
SW_REQUEST_ID: Final = "streamwatch.request_id"
SW_API: Final = "streamwatch.api"
SW_OUTCOME: Final = "streamwatch.outcome"
SW_TTFB: Final = "streamwatch.ttfb"
SW_MAX_GAP: Final = "streamwatch.max_gap"
SW_STALLS: Final = "streamwatch.stalls"
SW_OUTPUT_EVENTS: Final = "streamwatch.output_events"
SW_TOKENS_PER_SECOND: Final = "streamwatch.tokens_per_second"
SW_OUTPUT_TOKENS: Final = "streamwatch.output_tokens"
SW_OUTPUT_TOKENS_ESTIMATED: Final = "streamwatch.output_tokens_estimated"
SW_BODY_BYTES: Final = "streamwatch.body_bytes"
SW_ANALYSIS_FAILED: Final = "streamwatch.analysis_failed"
#: ``streamwatch.upstream_timing.<name>``: a duration the upstream announced (headers) or reported
#: (frames), in seconds, by its fixed timing name.
SW_UPSTREAM_TIMING_PREFIX: Final = "streamwatch.upstream_timing."
# event attributes
SW_TTFT: Final = "streamwatch.ttft"
SW_STALL_PHASE: Final = "streamwatch.stall.phase"
SW_STALL_SILENCE: Final = "streamwatch.stall.silence"
SW_STALL_DURATION: Final = "streamwatch.stall.duration"
SW_EVENT_INDEX: Final = "streamwatch.event_index"

# -- span event names ----------------------------------------------------------------------------
EVENT_FIRST_TOKEN: Final = "streamwatch.first_token"
EVENT_STALL_STARTED: Final = "streamwatch.stall.started"
EVENT_STALL_ENDED: Final = "streamwatch.stall.ended"
EVENT_ERROR_FRAME: Final = "streamwatch.error_frame"
EVENT_CLIENT_ABORT: Final = "streamwatch.client_abort"

# -- error.type values streamwatch defines (besides provider error types and HTTP status codes) -----
ERROR_CANCELLED: Final = "cancelled"  # the request ended before upstream answered
