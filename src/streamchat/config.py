"""One typed settings object, read from flags and `STREAMCHAT_*` environment variables.

It is checked once at start-up; a bad value fails with the key and the value named, before any
model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamchat.engine.sampling_defaults import parse


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "streamchat"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMCHAT_", extra="forbid", validate_default=True)

    model: str | None = Field(None, description="Local directory, .gguf file or hub id; default: embedded")
    served_model_name: str | None = Field(None, description="Name shown in /v1/models")
    engine: Literal["auto", "transformers", "llamacpp"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    linear_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="transformers on CPU, float32 model: dtype of the linear layers' products "
        "(auto: bfloat16 where the CPU has AVX512-BF16/AMX; the rest stays float32)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    max_model_len: int | None = Field(None, ge=16)
    max_num_seqs: int = Field(64, ge=1, le=4096)
    max_queue: int = Field(256, ge=0)
    cache_tokens: int | None = Field(None, ge=16, description="KV cache budget in tokens; default from free memory")
    prefill_chunk: int = Field(512, ge=1)
    history_rounds: int | None = Field(None, ge=0)
    default_max_tokens: int = Field(512, ge=1)
    ping_interval: float = Field(15.0, gt=0)
    shutdown_grace: float = Field(30.0, ge=0, description="seconds streams in flight may finish after SIGTERM")
    resume_grace: float = Field(30.0, ge=0, description="seconds a dropped stream keeps generating, awaiting a resume")
    stream_retention: float = Field(600.0, ge=0, description="seconds a finished stream stays replayable")
    stream_log_bytes: int = Field(64 * 2**20, ge=2**16, description="memory bound of the stream log")
    threads: int | None = Field(None, ge=1)
    batch_invariant: bool = Field(
        True,
        description="llama.cpp: keep greedy answers independent of the batch (each sequence's prompt alone decides "
        "which attention kernel computes it)",
    )
    spec_tokens: int = Field(
        8, ge=0, le=32, description="llama.cpp: draft tokens per step from prompt lookup (speculative decoding; 0: off)"
    )
    spec_max_running: int = Field(
        1, ge=0, description="draft only while at most this many sequences decode (it pays off at low concurrency)"
    )
    prefix_reuse: bool = Field(True, description="reuse the keys/values of the last chat turn (llamacpp)")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated keys; requests then need 'Authorization: Bearer KEY'"
    )
    api_key_file: Path | None = Field(None, description="file with one API key per line (# comments allowed)")
    public_health: bool = Field(True, description="serve /health without a key")
    public_metrics: bool = Field(True, description="serve /metrics without a key")
    rate_limit_rpm: int | None = Field(None, ge=1, description="requests per minute allowed per key")
    max_concurrent_per_key: int | None = Field(None, ge=1, description="requests in flight allowed per key")
    auth_failures_per_minute: int | None = Field(
        20, ge=1, description="wrong API keys one client address may send per minute before it gets 429 (none: off)"
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="proxies whose X-Forwarded-For names the client (comma list, or *): per-address limits see "
        "the real client behind them",
    )
    max_body_bytes: int = Field(2**20, ge=1024, description="largest request body accepted (413 beyond)")
    max_prompt_tokens: int | None = Field(None, ge=1, description="longest prompt accepted, in tokens")
    max_tokens_limit: int | None = Field(None, ge=1, description="largest max_tokens a request may ask for")
    sampling_defaults: str = Field(
        "",
        description="defaults for sampling settings a request leaves unset, "
        "e.g. 'repetition_penalty=1.1,temperature=0.7' (over the model's own and the embedded model's)",
    )
    stream_store: str = Field(
        "memory",
        pattern=r"^(memory|rediss?://.+)$",
        description="where streams' events are kept for resumption: memory, or redis://host:port/db "
        "(shared by every process that uses it)",
    )
    stream_lease: float = Field(
        5.0,
        gt=0,
        description="with a redis stream store: seconds a producing process's lease on a stream lasts unless renewed; "
        "after it, a resume reaching another process continues the answer there",
    )
    models_file: Path | None = Field(
        None, description="a TOML file of more models to serve beside --model, each under its name (docs/models.md)"
    )
    replicas: int | None = Field(
        None, ge=1, description="serve on Ray Serve with this many replicas, each with its own engine (docs/scaling.md)"
    )
    min_replicas: int | None = Field(None, ge=0, description="Ray Serve: autoscale down to this many replicas")
    max_replicas: int | None = Field(None, ge=1, description="Ray Serve: autoscale up to this many replicas")
    target_ongoing_requests: float | None = Field(
        None,
        gt=0,
        description="Ray Serve: in-flight requests per replica the autoscaler aims for (default max_num_seqs)",
    )
    ray_address: str | None = Field(None, description="Ray Serve: join this cluster (default: start a local one)")
    ray_ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="Ray Serve on a local cluster: HTTP through HAProxy straight to the replicas, or through Ray's "
        "Python proxy (docs/scaling.md)",
    )
    responses_store_size: int = Field(1000, ge=1, description="stored Responses API responses kept (oldest go first)")
    responses_store_ttl: float = Field(
        86400.0, gt=0, description="seconds a stored Responses API response is kept after it was created"
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    seed: int = 0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_prompts: bool = Field(False, description="log prompts and answers (private: off by default)")
    trust_remote_code: bool = Field(
        False,
        description="run the Python code a model folder ships beside its weights (auto_map in config.json), "
        "as ChatGLM's do; read it first: it runs with the server's rights",
    )

    @field_validator("cors_origins", "api_key", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("auth_failures_per_minute", mode="before")
    @classmethod
    def _none_turns_off(cls, v: object) -> object:
        return None if isinstance(v, str) and v.strip().lower() in ("none", "off") else v

    @field_validator("sampling_defaults")
    @classmethod
    def _known_sampling_defaults(cls, v: str) -> str:
        parse(v)  # names and ranges checked at start-up
        return v

    @field_validator("api_key_file", "models_file")
    @classmethod
    def _key_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no such file: {v}")
        return v

    def api_keys(self) -> frozenset[str]:
        """Every accepted key, from the flag and the file."""
        keys = set(self.api_key)
        if self.api_key_file is not None:
            for line in self.api_key_file.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.add(line)
        return frozenset(keys)

    @model_validator(mode="after")
    def _check_budget(self) -> Settings:
        if self.cache_tokens is not None and self.max_model_len is not None and self.cache_tokens < self.max_model_len:
            raise ValueError(
                f"cache_tokens={self.cache_tokens} is smaller than max_model_len={self.max_model_len}: "
                "a single full-length request could never run"
            )
        return self
