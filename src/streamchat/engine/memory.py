"""How much KV cache the engine may hold: the budget, and how each backend spends it.

- transformers: the row cache grows on demand up to a budget in tokens (`cache_budget`): the
  configured `--cache-tokens`, or a share of the memory free at start.
- llama.cpp: one stream of cells per row and per parked prefix is reserved when the context is
  made (`cells_per_sequence` says how long); the memory behind a cell is resident only while a
  sequence holds it (`llamacpp/pages.py`), so the same budget in tokens is a ceiling the scheduler
  keeps the rows under (the sum of their tokens, not rows × longest). Where the cells cannot be
  handed back, every stream stays resident and the budget is split among them (`even_share`).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

CACHE_SHARE_OF_FREE_MEMORY = 0.3
CELL_STEP = 256  # llama.cpp rounds each stream's cells up to a multiple of this
DEFAULT_CONTEXT = 2048  # llama.cpp: positions per sequence unless max_model_len or cache_tokens say otherwise
_MIN_SHRUNK_CONTEXT = 512  # a memory cap never shrinks a sequence's capacity below this


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def cache_budget(configured: int | None, bytes_per_token: int, device: torch.device, ceiling: int, longest: int) -> int:
    """The configured budget, or a share of free memory; never less than one full-length request."""
    tokens = configured or default_cache_tokens(bytes_per_token, device, ceiling)
    tokens = max(tokens, longest)
    log.info("KV cache budget: %d tokens (%.0f MiB)", tokens, tokens * bytes_per_token / 2**20)
    return tokens


def default_cache_tokens(bytes_per_token: int, device: torch.device, ceiling: int) -> int:
    """A share of the memory free now, never more than every sequence at full length needs."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = available_ram()
    return max(1, min(ceiling, int(free * CACHE_SHARE_OF_FREE_MEMORY) // bytes_per_token))


def available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def cells_per_sequence(n_seq_ids: int, context: int, cache_tokens: int | None, ram_tokens: int) -> int:
    """Each llama.cpp sequence's capacity in positions (its stream's cells), for `n_seq_ids` sequence ids.

    `context` positions each, never more than the whole budget (`cache_tokens`), shrunk (in 256s,
    not below 512) until all streams fit in `ram_tokens` cells: llama.cpp writes zeros over every
    stream when the context is made, so the reservation must fit in memory once, at start.
    """
    if cache_tokens is not None:
        context = min(context, cache_tokens)
    if n_seq_ids * context <= ram_tokens:
        return context
    fit = max(_MIN_SHRUNK_CONTEXT, ram_tokens // n_seq_ids // CELL_STEP * CELL_STEP)
    if fit < context:
        log.warning(
            "%d sequences × %d positions would not fit in the memory share for the KV cache "
            "(%d cells): each sequence holds %d positions instead",
            n_seq_ids,
            context,
            ram_tokens,
            fit,
        )
    return min(fit, context)


def even_share(n_seq_ids: int, longest: int, cache_tokens: int) -> int:
    """Where every cell stays resident: each sequence's share of `cache_tokens`, in 256s, up to `longest`."""
    share = cache_tokens // n_seq_ids // CELL_STEP * CELL_STEP
    if share < CELL_STEP:
        raise ValueError(
            f"cache_tokens={cache_tokens} leaves each of the {n_seq_ids} sequences (rows and parked prefixes) "
            f"fewer than {CELL_STEP} positions: give at least {n_seq_ids * CELL_STEP} or lower max_num_seqs"
        )
    return min(share, longest)
