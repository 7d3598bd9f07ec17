"""How often the served model's answers loop, with and without its sampling defaults.

An answer loops when a run of 6 words comes back 4 times or more, or a line (10 characters or
more) 3 times or more. Everyday prompts, English and Chinese, 400 tokens at most, at the settings
people actually use: the chat page's (OpenAI chat, temperature 0.7) and the seed's routes'
(ChatGLM's `POST /`, temperature 0.95, top-p 0.7). Each setting runs on the server as it ships
(its sampling defaults), then with each repetition penalty of `--penalties` set by the operator
(`--sampling-defaults repetition_penalty=P`; 1.0 switches it off).

    python -m bench.loop_rate                      # the embedded model, shipped and without penalty
    python -m bench.loop_rate --penalties 1.0,1.15,1.2 --out bench/results/loop-rate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import httpx

from bench.stress import log, machine_line, serve

PROMPTS_EN = [
    "Write a short story about a dragon who is afraid of the dark.",
    "Tell me a tale about heroes who save a village.",
    "Explain how a rainbow forms.",
    "Give me a recipe for pancakes.",
    "What are some tips for sleeping better?",
    "Write a poem about the ocean.",
    "How do I start learning to play the guitar?",
    "Describe a day in the life of a cat.",
    "What should I pack for a weekend camping trip?",
    "Explain photosynthesis to a ten-year-old.",
    "Write a letter to a friend who moved away.",
    "What are the benefits of drinking water?",
    "Suggest a plan for a birthday party.",
    "How can I save money on groceries?",
    "Write a song about summer.",
    "Describe your ideal vacation.",
    "Why is the sky blue?",
    "Give me five ideas for a rainy afternoon.",
    "Write a story about a robot who learns to paint.",
    "What is the difference between weather and climate?",
    "How do I make a good first impression at a job interview?",
    "Tell me about the history of the bicycle.",
    "Write a motivational speech for a football team.",
    "What are good habits for studying?",
    "Describe the city at night.",
    "Write a fairy tale about a princess and a talking frog.",
    "How do plants know which way is up?",
    "Explain what a computer does, simply.",
    "Give me advice for a first trip abroad.",
    "Write a poem about autumn leaves.",
    "What makes a good friend?",
    "Tell me a bedtime story about the moon.",
    "How do I take care of a houseplant?",
    "Write a short mystery story.",
    "What are some healthy breakfast ideas?",
    "Describe a walk through a forest.",
    "Write a thank-you note to a teacher.",
    "How does a bee make honey?",
    "Tell me a legend about a mountain.",
    "Write a story about two brothers on an adventure.",
]
PROMPTS_ZH = [
    "请写一个关于小猫的故事。",
    "介绍一下中国的春节。",
    "怎样才能睡得更好？",
    "写一首关于月亮的诗。",
    "给我一些学习英语的建议。",
    "描述一下你理想的假期。",
    "为什么天空是蓝色的？",
    "请讲一个关于英雄的故事。",
    "怎样做一道简单的番茄炒蛋？",
    "写一封给朋友的信。",
    "介绍一下长城的历史。",
    "如何保持健康的生活方式？",
    "写一个关于大海的小故事。",
    "给我推荐几本好书。",
    "描述一下秋天的景色。",
    "怎样才能提高写作能力？",
    "请写一首关于春天的歌。",
    "讲一个关于龙的传说。",
    "怎样照顾一只小狗？",
    "写一个关于友谊的故事。",
]
PROMPTS = PROMPTS_EN + PROMPTS_ZH
MAX_TOKENS = 400
CONCURRENCY = 16


def loops(text: str) -> bool:
    """A run of 6 words 4 times or more, or a line of 10+ characters 3 times or more."""
    words = text.split()
    runs = Counter(tuple(words[i : i + 6]) for i in range(len(words) - 5))
    if runs and max(runs.values()) >= 4:
        return True
    if re.search(r"[\u4e00-\u9fff]", text):  # Chinese has no spaces: runs of 12 characters instead
        chars = re.sub(r"\s", "", text)
        grams = Counter(chars[i : i + 12] for i in range(len(chars) - 11))
        if grams and max(grams.values()) >= 4:
            return True
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= 10)
    return bool(lines) and max(lines.values()) >= 3


async def page_answer(client: httpx.AsyncClient, prompt: str, seed: int, extra: dict) -> str:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS, "temperature": 0.7}
    r = await client.post("/v1/chat/completions", json={**body, "seed": seed, **extra})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


async def seed_answer(client: httpx.AsyncClient, prompt: str, _seed: int, _extra: dict) -> str:
    body = {"prompt": prompt, "history": [], "temperature": 0.95, "top_p": 0.7}  # answer: --max-tokens-limit
    r = await client.post("/", json=body)
    r.raise_for_status()
    return r.json()["response"]


async def rate(url: str, ask, extra: dict, seed: int) -> dict:
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=1800) as client:

        async def one(i: int, prompt: str) -> str:
            async with gate:
                return await ask(client, prompt, seed + i, extra)

        answers = await asyncio.gather(*(one(i, p) for i, p in enumerate(PROMPTS)))
    looped = [p for p, a in zip(PROMPTS, answers, strict=True) if loops(a)]
    return {"prompts": len(PROMPTS), "looped": len(looped), "rate": len(looped) / len(PROMPTS), "which": looped}


def run(args: argparse.Namespace) -> dict:
    results: dict[str, dict] = {}
    variants = [("shipped defaults", [])] + [
        (f"repetition_penalty={p}", ["--sampling-defaults", f"repetition_penalty={p}"]) for p in args.penalties
    ]
    settings = (("chat page (temperature 0.7)", page_answer), ("seed routes (0.95, top-p 0.7)", seed_answer))
    for label, flags in variants:
        # the seed routes take ChatGLM api.py's max_length; 400 answer tokens at most, as on the page
        with serve(f"loop-{len(results)}", "--max-tokens-limit", str(MAX_TOKENS), *flags) as server:
            defaults = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["sampling_defaults"]
            for name, ask in settings:
                found = asyncio.run(rate(server.url, ask, {}, args.seed))
                results[f"{label} | {name}"] = {**found, "defaults": defaults}
                log(f"{label} | {name}: {found['looped']}/{found['prompts']} loop ({defaults})")
    return results


def report(results: dict, command: str) -> str:
    lines = [
        "## Loop rate of the embedded model",
        "",
        f"- {machine_line()}",
        f"- Command: `{command}`",
        f"- {len(PROMPTS)} prompts ({len(PROMPTS_EN)} English, {len(PROMPTS_ZH)} Chinese), "
        f"at most {MAX_TOKENS} tokens each",
        "",
        "| server defaults | setting | looping answers | rate |",
        "|---|---|---|---|",
    ]
    for key, r in results.items():
        label, setting = key.split(" | ")
        shown = f"{label} `{json.dumps(r['defaults'])}`"
        lines.append(f"| {shown} | {setting} | {r['looped']}/{r['prompts']} | {r['rate']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="first request's sampling seed (the page's route)")
    parser.add_argument(
        "--penalties",
        type=lambda s: [float(p) for p in s.split(",")],
        default=[1.0],
        help="repetition penalties to compare, set with --sampling-defaults",
    )
    parser.add_argument("--out", default=None, help="writes OUT.md and OUT.json")
    args = parser.parse_args()
    results = run(args)
    command = "python -m bench.loop_rate --penalties " + ",".join(map(str, args.penalties))
    command += f" --out {args.out}" if args.out else ""
    text = report(results, command)
    print(text)
    if args.out:
        Path(f"{args.out}.md").write_text(text, encoding="utf-8")
        Path(f"{args.out}.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
