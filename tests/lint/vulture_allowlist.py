"""Names vulture cannot see used: frameworks call them by convention, or they satisfy an interface.

Each entry says who uses it. A name missing here and unused in `src/` is dead code
(`tests/lint/test_dead_code.py`): remove it rather than list it, unless a framework needs it.
"""
# ruff: noqa: B018, F821

# FastAPI routes and exception handlers (registered by decorators)
_api_error, _invalid, _http, _unexpected
chat_page, list_models, get_model, chat_completions, completions, stream_post, stream_get, chatglm_api
# pydantic: model configuration, validators (by decorator), fields clients may send and we accept
model_config, _._repair_text, _._not_blank, _._null_history, _._split_origins, _._key_file_exists, _._check_budget
_._none_turns_off, _._known_sampling_defaults
user, best_of, cls
# prometheus_client calls a collector's collect()
_.collect
# typing.Protocol signatures: parameters name the interface
conversation, kwargs, add_special_tokens, skip_special_tokens
# llama.cpp context parameters (a ctypes struct the C library reads)
_.n_ctx, _.n_batch, _.n_ubatch, _.n_threads, _.n_threads_batch, _.no_perf, _.kv_unified
# counters read by name (getattr) by the metrics collector and /health
generated_tokens, prefilled_tokens, reused_tokens, steps, disconnects, abandoned, draft_tokens, accepted_tokens
_.steps, _.reused_tokens, _.prefilled_tokens, _.generated_tokens, _.disconnects, _.abandoned
_.draft_tokens, _.accepted_tokens, taken_over, _.taken_over
guessed_tokens, guessed_kept, _.guessed_tokens, _.guessed_kept
# torch and transformers call these on modules and caches
_.extra_repr, _.get_seq_length, module, dropout
# uvicorn calls these on its protocol and server
_.send_400_response, _.capture_signals
# request fields read through model_dump or getattr by name (structured outputs, tools)
modalities, strict, json_, json_object, guided_json, guided_regex, guided_choice, guided_grammar
_._no_unsupported_fields, _._schema_given
# Responses API routes and request fields read by name
create_response, get_response, cancel_response, delete_response, verbosity
# Anthropic Messages routes, validators, and fields clients send that change nothing here (caching hints, sources)
create_message, count_tokens
_._blocks, _._object_schema, _._named_when_tool, _._no_effort, _._system_blocks, _._custom_tools
cache_control, citations, eager_input_streaming
# tokenizers reads a Tokenizer's pre_tokenizer when it encodes (set for GLM GGUFs)
_.pre_tokenizer
# Ollama routes, validators, and options read by name (getattr) when mapped to sampling settings
tags, ps, show, _._one_or_many, _._not_zero, _._lower, repeat_penalty
# FastAPI exception handler for an unreachable stream store (registered by decorator)
_store_down
# Ray Serve: the application builder named in deploy/ray-serve.yaml, and a replica's health check
build, _.check_health
