"""A tiny model folder with its own Python code, written by the tests: ChatGLM-6B's shape in miniature.

`configuration_tinyglm.py` and `modeling_tinyglm.py` sit beside `config.json`, whose `auto_map`
names them, as in THUDM/chatglm-6b. The model is a real (tiny, random) torch module: each step of
its `stream_chat` runs a forward over the prompt and the answer so far and picks the next token
from the logits. Its answer is fixed by the question (the logits get a large bias towards the
scripted token, so every temperature picks it), which lets tests check the text exactly:
Chinese, a 4-byte emoji and a comma that ChatGLM's own `process_response` rewrites once the next
character arrives. The tokenizer is the embedded model's byte-level BPE, which splits Chinese
characters and the emoji over several tokens, so a decode mid-character ends in U+FFFD, as
ChatGLM's does.

Every call is recorded as JSON lines in `progress_file` (start with its arguments, each step,
and how the loop ended), so a test in another process can see the model's loop run and stop.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGURATION = """
from transformers import PretrainedConfig


class TinyGLMConfig(PretrainedConfig):
    model_type = "tinyglm"

    def __init__(self, vocab_size=49152, hidden_size=8, max_sequence_length=2048, step_delay=0.0,
                 progress_file="", **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_sequence_length = max_sequence_length
        self.step_delay = step_delay
        self.progress_file = progress_file
        super().__init__(**kwargs)
"""

MODELING = '''
import json
import re
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_tinyglm import TinyGLMConfig

LONG_MARK = "long"


def answer_for(query, history):
    """What the model says: the round, the question back, Chinese, an emoji, a comma to rewrite."""
    text = f"第{len(history) + 1}轮。OK,你问：{query}🌊"
    if LONG_MARK in query:
        text += "很长的回答。" * 400
    return text


def build_prompt(query, history):
    """ChatGLM-6B's prompt."""
    if not history:
        return query
    prompt = ""
    for i, (old_query, response) in enumerate(history):
        prompt += "[Round {}]\\n问：{}\\n答：{}\\n".format(i, old_query, response)
    return prompt + "[Round {}]\\n问：{}\\n答：".format(len(history), query)


def process_response(response):
    """ChatGLM-6B's own clean-up: half-width punctuation next to Chinese becomes full-width."""
    response = response.strip()
    for half, full in ((",", "，"), ("!", "！"), (":", "："), (";", "；"), (r"\\?", "？")):
        response = re.sub(r"([\\u4e00-\\u9fff])%s" % half, r"\\1%s" % full, response)
        response = re.sub(r"%s([\\u4e00-\\u9fff])" % half, r"%s\\1" % full, response)
    return response


class FollowScript(LogitsProcessor):
    def __init__(self, script, eos, start):
        self.script, self.eos, self.start = script, eos, start

    def __call__(self, input_ids, scores):
        n = input_ids.shape[1] - self.start
        scores[:, self.script[n] if n < len(self.script) else self.eos] += 1e4
        return scores


class TinyGLMForConditionalGeneration(PreTrainedModel):
    config_class = TinyGLMConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()  # POST_INIT

    def forward(self, input_ids, **kwargs):
        return CausalLMOutputWithPast(logits=self.head(self.embed(input_ids)))

    def _record(self, **event):
        if self.config.progress_file:
            with open(self.config.progress_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(event, ensure_ascii=False) + "\\n")

    @torch.no_grad()
    def chat(self, tokenizer, query, history=None, max_length=2048, do_sample=True, top_p=0.7, temperature=0.95,
             **kwargs):
        """ChatGLM's non-streaming call, through transformers' generate (GenerationMixin)."""
        history = history or []
        prompt_ids = tokenizer([build_prompt(query, history)])["input_ids"][0]
        script = tokenizer.encode(answer_for(query, history), add_special_tokens=False)
        self._record(event="start", query=query, history=[list(h) for h in history], max_length=max_length,
                     do_sample=do_sample, top_p=top_p, temperature=temperature, prompt_tokens=len(prompt_ids))
        sampling = dict(temperature=temperature, top_p=top_p) if do_sample else {}
        outputs = self.generate(torch.tensor([prompt_ids]), max_length=max_length, do_sample=do_sample, use_cache=False,
                                logits_processor=LogitsProcessorList([FollowScript(script, tokenizer.eos_token_id,
                                len(prompt_ids))]), eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.eos_token_id, **sampling)
        response = process_response(tokenizer.decode(outputs[0][len(prompt_ids):], skip_special_tokens=True))
        self._record(event="end", how="finished", n=len(outputs[0]) - len(prompt_ids))
        return response, history + [(query, response)]

    @torch.no_grad()
    def stream_chat(self, tokenizer, query, history=None, max_length=2048, do_sample=True, top_p=0.7,
                    temperature=0.95, logits_processor=None, **kwargs):
        history = history or []
        prompt_ids = tokenizer([build_prompt(query, history)])["input_ids"][0]
        script = tokenizer.encode(answer_for(query, history), add_special_tokens=False)
        script.append(tokenizer.eos_token_id)
        self._record(event="start", query=query, history=[list(h) for h in history], max_length=max_length,
                     do_sample=do_sample, top_p=top_p, temperature=temperature, prompt_tokens=len(prompt_ids))
        out, how = [], "finished"
        try:
            for want in script:
                if len(prompt_ids) + len(out) >= max_length:
                    how = "max_length"
                    break
                logits = self(torch.tensor([prompt_ids + out])).logits[0, -1]
                logits[want] += 1e4
                if do_sample:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1))
                else:
                    token = int(logits.argmax())
                if token == tokenizer.eos_token_id:
                    break
                out.append(token)
                if self.config.step_delay:
                    time.sleep(self.config.step_delay)
                response = process_response(tokenizer.decode(out))
                self._record(event="step", n=len(out))
                yield response, history + [(query, response)]
        except GeneratorExit:
            how = "closed"
            raise
        finally:
            self._record(event="end", how=how, n=len(out))
'''


def write_tiny_glm(
    folder: Path,
    tokenizer,
    *,
    step_delay: float = 0.0,
    progress_file: Path | None = None,
    streams: bool = True,
    calls_post_init: bool = True,
) -> Path:
    """Write the model folder: code, config with `auto_map`, random weights, the embedded tokenizer.

    `streams=False`: the model offers only `chat`, which calls `self.generate` though the class does
    not inherit `GenerationMixin` (transformers 5 no longer implies it). `calls_post_init=False`:
    its `__init__` never calls `post_init()`, as old remote code did not.
    """
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    modeling = MODELING
    if not streams:
        modeling = modeling.replace("def stream_chat(", "def _stream_chat_unused(")
    if not calls_post_init:
        modeling = modeling.replace("self.post_init()  # POST_INIT", "pass")
    # one configuration class per variant: transformers maps a configuration class to the model class
    # it last loaded for it, for the whole process
    variant = f"# streams={streams} calls_post_init={calls_post_init}\n"
    (folder / "configuration_tinyglm.py").write_text(variant + CONFIGURATION, encoding="utf-8")
    (folder / "modeling_tinyglm.py").write_text(modeling, encoding="utf-8")
    hidden, vocab = 8, len(tokenizer)
    config = {
        "model_type": "tinyglm",
        "architectures": ["TinyGLMForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "configuration_tinyglm.TinyGLMConfig",
            "AutoModel": "modeling_tinyglm.TinyGLMForConditionalGeneration",
            "AutoModelForSeq2SeqLM": "modeling_tinyglm.TinyGLMForConditionalGeneration",
        },
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_sequence_length": 2048,
        "step_delay": step_delay,
        "progress_file": str(progress_file or ""),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    generator = torch.Generator().manual_seed(0)
    weights = {
        "embed.weight": torch.randn(vocab, hidden, generator=generator) * 0.02,
        "head.weight": torch.randn(vocab, hidden, generator=generator) * 0.02,
    }
    save_file(weights, str(folder / "model.safetensors"))
    tokenizer.save_pretrained(folder)
    return folder
