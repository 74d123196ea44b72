"""Language-model plumbing for the recipes: load for training, tokenize chats, batch, score, sample, save.

Precision follows real mixed-precision training: the bf16 base is loaded into **fp32 master weights**
(exact: every bf16 value is an fp32 value), all compute runs in fp32 (on CPUs without bf16 units bf16
compute is ~50× slower), and checkpoints are written in bf16 by rounding the master weights to nearest
(:func:`save_bf16`). Rounding to bf16 after every step instead would drop every update smaller than half
a bf16 step and inflate sparsity.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: files copied from the base beside each saved checkpoint (so every run dir loads with from_pretrained)
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def load_for_training(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a model directory: fp32 weights, eval-free (no dropout in Llama)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.use_cache = False
    return model, tok


def prompt_ids(tok: Any, user: str) -> list[int]:
    """Token ids of a one-turn chat up to the assistant's turn (the tokenizer's chat template)."""
    text = tok.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
    )
    ids: list[int] = tok(text, add_special_tokens=False)["input_ids"]
    return ids


def completion_ids(tok: Any, text: str, eos: bool = True) -> list[int]:
    """Token ids of an assistant response, ending with the end-of-turn token when ``eos``."""
    ids: list[int] = tok(text, add_special_tokens=False)["input_ids"]
    return [*ids, tok.eos_token_id] if eos else ids


@dataclass
class Batch:
    """Right-padded sequences with a mask of the positions whose tokens are scored (the completions)."""

    input_ids: torch.Tensor  #: [B, T]
    attention_mask: torch.Tensor  #: [B, T]
    loss_mask: torch.Tensor  #: [B, T] True where the token at that position is a completion token


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, max_length: int) -> Batch:
    """Batch ``(prompt_ids, completion_ids)`` pairs; the completion is cut to fit ``max_length`` and a too
    long prompt loses its start (at least 8 completion tokens are always kept)."""
    seqs, masks = [], []
    for p, c in pairs:
        keep_c = min(len(c), max(8, max_length - len(p)))
        c = c[:keep_c]
        p = p[-(max_length - len(c)) :] if len(p) + len(c) > max_length else p
        seqs.append(p + c)
        masks.append([False] * len(p) + [True] * len(c))
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), t), dtype=torch.long)
    lm = torch.zeros((len(seqs), t), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        lm[i, : len(s)] = torch.tensor(m)
    return Batch(ids, att, lm)


def token_logprobs(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp [B, T-1], mask [B, T-1])``: log-probability of each scored token under ``model``."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    labels = batch.input_ids[:, 1:]
    mask = batch.loss_mask[:, 1:]
    logp = -torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), reduction="none"
    ).view(labels.shape)
    return logp * mask, mask


def sequence_logprobs(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of logp over completion tokens [B], completion length [B])``."""
    logp, mask = token_logprobs(model, batch)
    return logp.sum(-1), mask.sum(-1)


@torch.no_grad()
def sample(
    model: Any,
    tok: Any,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int = 16,
    top_p: float = 1.0,
) -> list[list[int]]:
    """Sampled completion token ids (ending at and including the end-of-turn token, if one came)."""
    was_training = model.training
    model.eval()
    model.config.use_cache = True
    out: list[list[int]] = []
    eos, pad = tok.eos_token_id, tok.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            t = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), t), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), t), dtype=torch.long)
            for j, p in enumerate(chunk):
                ids[j, t - len(p) :] = torch.tensor(p)
                att[j, t - len(p) :] = 1
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            res = model.generate(
                input_ids=ids,
                attention_mask=att,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            for row in res[:, t:].tolist():
                if eos in row:
                    row = row[: row.index(eos) + 1]
                out.append(row)
    finally:
        model.config.use_cache = False
        model.train(was_training)
    return out


def decode(tok: Any, ids: list[int]) -> str:
    """Text of completion ids, without special tokens."""
    text: str = tok.decode(ids, skip_special_tokens=True)
    return text


def base_tensor_names(base_dir: str | os.PathLike[str]) -> list[str]:
    """Tensor names stored in the base checkpoint (the names every saved run uses too)."""
    from ..io.checkpoint import open_checkpoint

    return list(open_checkpoint(Path(base_dir)).tensors)


def save_bf16(
    model: Any,
    base_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    names: Sequence[str],
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Save the model's (fp32 master) weights rounded to ``dtype`` under the base's tensor ``names``, with the
    base's config and tokenizer, as one ``model.safetensors``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    tensors = {n: sd[n].detach().to(dtype).contiguous() for n in names}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in SIDE_FILES:
        src = Path(base_dir) / f
        if src.is_file():
            shutil.copyfile(src, out / f)
    return out
