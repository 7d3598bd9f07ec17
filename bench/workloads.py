"""The prompts of the long-prompt and edit levels of `bench.run`.

Long prompts: ≈1,500-token documents, each different from its first sentence on, so no server can
answer one from another's cached prefix; what is measured is prefill. Edit prompts: answers that
copy most of their prompt (a paragraph with one change, a JSON object fixed, a list extended, a
function with a renamed variable), where prompt-lookup speculative decoding has something to copy.
"""

from __future__ import annotations

import random

_SUBJECTS = ["The harbour master", "A courier", "The night clerk", "An engineer", "The archivist", "A pilot"]
_VERBS = ["recorded", "inspected", "delivered", "repaired", "catalogued", "reported"]
_OBJECTS = ["a crate of lamps", "the north pier", "twelve letters", "the signal mast", "a map of the bay"]
_WHEN = ["on Monday morning", "before the storm", "at dusk", "after the tide turned", "in the spring"]
_WHY = ["because the ledger was late", "as the council asked", "to settle a dispute", "for the insurers"]


def long_prompt(index: int, sentences: int = 63) -> str:
    """A log of `sentences` events (≈24 tokens each), different for every `index`, and a question."""
    rng = random.Random(index)
    lines = [f"Record {index}-{i}: {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
             f"{rng.choice(_WHEN)} {rng.choice(_WHY)}." for i in range(sentences)]  # fmt: skip
    return "\n".join(lines) + "\n\nWhich records mention the signal mast? Answer briefly."


PARAGRAPH = (
    "The committee met on Tuesday to review the annual budget. After a long discussion, the members agreed "
    "to increase funding for the public library by ten percent, to repair the roof of the community hall "
    "before winter, and to postpone the new parking lot until next year. The chair thanked the volunteers "
    "who organised the spring fair and asked the treasurer to publish the accounts by the end of the month."
)
BROKEN_JSON = (
    '{"name": "Ada Lovelace", "born": 1815, "fields": ["mathematics", "computing"] "languages": '
    '["English", "French"], "notes": {"first_program": true, "collaborator": "Charles Babbage"}}'
)
FUNCTION = """def mean(values):
    x = 0
    for v in values:
        x = x + v
    if len(values) == 0:
        return 0.0
    return x / len(values)
"""
EDIT_PROMPTS = [
    f"Rewrite this paragraph with one change: Tuesday becomes Friday. Keep every other word.\n\n{PARAGRAPH}",
    f"This JSON is missing a comma. Return the corrected JSON only.\n\n{BROKEN_JSON}",
    f"Rename the variable x to total in this Python function. Return the whole function.\n\n{FUNCTION}",
    f"Repeat this paragraph exactly, then add one sentence about the weather.\n\n{PARAGRAPH}",
]
