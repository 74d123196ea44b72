"""Training recipes: SFT, DPO and GRPO from a base model, in one plain PyTorch loop.

Why a plain loop and not TRL's trainers: on a 2-core CPU they cost 1.5–2× a plain loop per step, and the
study needs exact control of precision (fp32 master weights, bf16 storage, see :mod:`.lm`) and of the data
order (the subnetwork run must see exactly the batches of the full run). The objectives are the standard
ones: SFT is the mean token cross-entropy on the response; DPO is ``-log σ(β·(Δ_policy − Δ_ref))`` with
the reference log-probabilities of the base computed once before training; GRPO samples ``group_size``
completions per prompt from the current policy, normalises the rule reward within each group
(``(r − mean) / (std + 1e-4)``), and takes one on-policy policy-gradient step on the mean per-token
log-probability weighted by that advantage (no KL term, as TRL's default ``beta=0``). Every recipe uses
AdamW (β = 0.9, 0.999; constant learning rate) and clips the gradient norm.

Subnetwork finetuning (paper §4) attaches :class:`subnetscope.train.SubnetworkMask` to the same loop, and
``track`` attaches :class:`subnetscope.train.UpdateTracker`.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..progress import bars_allowed, progress_bar
from .config import RunSpec
from .data import Problem, SFTExample, addition_reward
from .lm import (
    Batch,
    base_tensor_names,
    collate,
    completion_ids,
    decode,
    load_for_training,
    prompt_ids,
    sample,
    save_bf16,
    sequence_logprobs,
    token_logprobs,
)

#: bump when a recipe changes what it computes (invalidates cached runs)
RECIPE_VERSION = "1"


@dataclass
class Pair:
    """A preference pair as token ids (the completions exactly as sampled)."""

    prompt: str
    chosen: list[int]
    rejected: list[int]


@dataclass
class TrainLog:
    """What a run records besides its weights."""

    losses: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    checkpoints: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "losses": self.losses,
            "metrics": self.metrics,
            "seconds": self.seconds,
            "checkpoints": self.checkpoints,
            **self.extra,
        }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _order(n: int, seed: int) -> Iterator[int]:
    """Indices ``0..n-1`` in a fresh shuffled order per epoch, forever."""
    rng = random.Random(f"order-{seed}")
    while True:
        idx = list(range(n))
        rng.shuffle(idx)
        yield from idx


def _take(it: Iterator[int], k: int) -> list[int]:
    return [next(it) for _ in range(k)]


StepFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]


def _sft_step(model: Any, tok: Any, data: Sequence[SFTExample], spec: RunSpec) -> StepFn:
    enc = [(prompt_ids(tok, ex.prompt), completion_ids(tok, ex.response)) for ex in data]
    order = _order(len(enc), spec.seed)

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        b = collate([enc[i] for i in _take(order, spec.batch_size)], tok.pad_token_id, spec.max_length)
        logp, mask = token_logprobs(model, b)
        loss = -logp.sum() / mask.sum().clamp(min=1)
        return loss, {"tokens": float(mask.sum())}

    return step


def _pair_batch(tok: Any, pairs: Sequence[Pair], idx: Sequence[int], max_length: int) -> Batch:
    ps = [prompt_ids(tok, pairs[i].prompt) for i in idx]
    rows = [(p, pairs[i].chosen) for p, i in zip(ps, idx)] + [(p, pairs[i].rejected) for p, i in zip(ps, idx)]
    return collate(rows, tok.pad_token_id, max_length)


@torch.no_grad()
def reference_logprobs(
    model: Any, tok: Any, pairs: Sequence[Pair], max_length: int, batch: int = 8
) -> torch.Tensor:
    """``[n, 2]`` summed completion log-probabilities (chosen, rejected) under ``model``."""
    out = torch.zeros(len(pairs), 2)
    with progress_bar(len(pairs), "reference log-probs", unit="pair") as bar:
        for i in range(0, len(pairs), batch):
            idx = list(range(i, min(i + batch, len(pairs))))
            s, _ = sequence_logprobs(model, _pair_batch(tok, pairs, idx, max_length))
            out[idx, 0] = s[: len(idx)]
            out[idx, 1] = s[len(idx) :]
            bar.update(len(idx))
    return out


def _dpo_step(model: Any, tok: Any, data: Sequence[Pair], spec: RunSpec) -> StepFn:
    ref = reference_logprobs(model, tok, data, spec.max_length)
    order = _order(len(data), spec.seed)

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = _take(order, spec.batch_size)
        s, _n = sequence_logprobs(model, _pair_batch(tok, data, idx, spec.max_length))
        k = len(idx)
        margin = (s[:k] - ref[idx, 0]) - (s[k:] - ref[idx, 1])
        loss = -torch.nn.functional.logsigmoid(spec.beta * margin).mean()
        acc = float((margin > 0).float().mean())
        return loss, {"reward_accuracy": acc, "margin": float(spec.beta * margin.detach().mean())}

    return step


def _grpo_step(model: Any, tok: Any, data: Sequence[Problem], spec: RunSpec) -> StepFn:
    order = _order(len(data), spec.seed)
    g = spec.group_size

    def step(k: int) -> tuple[torch.Tensor, dict[str, float]]:
        probs = [data[i] for i in _take(order, spec.batch_size)]
        ps = [prompt_ids(tok, p.prompt) for p in probs]
        prompts = [p for p in ps for _ in range(g)]
        comps = sample(
            model,
            tok,
            prompts,
            spec.max_new_tokens,
            spec.temperature,
            seed=spec.seed * 100003 + k,
            batch_size=len(prompts),
        )
        rewards = torch.tensor(
            [addition_reward(decode(tok, c), probs[j // g].answer) for j, c in enumerate(comps)]
        ).view(len(probs), g)
        adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(-1)
        rows = [(p, c if c else [tok.eos_token_id]) for p, c in zip(prompts, comps)]
        b = collate(rows, tok.pad_token_id, spec.max_length)
        logp, mask = token_logprobs(model, b)
        per_seq = logp.sum(-1) / mask.sum(-1).clamp(min=1)
        loss = -(adv * per_seq).mean()
        informative = float((rewards.std(1) > 0).float().mean())
        return loss, {"reward": float(rewards.mean()), "informative_groups": informative}

    return step


_STEPS: dict[str, Callable[[Any, Any, Any, RunSpec], StepFn]] = {
    "sft": _sft_step,
    "dpo": _dpo_step,
    "grpo": _grpo_step,
}


def train(
    spec: RunSpec,
    base_dir: str | Path,
    out_dir: str | Path,
    data: Sequence[Any],
    *,
    mask_path: str | Path | None = None,
    progress: bool = True,
) -> TrainLog:
    """Train ``spec`` from the base in ``base_dir`` and save the bf16 result (and checkpoints) in ``out_dir``.

    ``data`` is a list of :class:`~.data.SFTExample` (sft), :class:`Pair` (dpo) or :class:`~.data.Problem`
    (grpo). With ``mask_path`` only the parameters the mask marks are trained (the others stay
    byte-identical to the base); with ``spec.track`` an :class:`~subnetscope.train.UpdateTracker` writes
    ``out_dir/tracker``.
    """
    t0, c0 = time.time(), time.process_time()
    out = Path(out_dir)
    torch.manual_seed(spec.seed)
    model, tok = load_for_training(base_dir)
    model.train()
    names = base_tensor_names(base_dir)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=spec.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=spec.weight_decay,
    )
    log = TrainLog()
    handle = tracker = None
    if mask_path is not None:
        from ..train import SubnetworkMask

        mask = SubnetworkMask.load(mask_path, model)
        handle = mask.attach(model, opt)
        log.extra["mask"] = {
            "path": str(mask_path),
            "trainable": int(mask.trainable),
            "numel": int(mask.numel),
        }
    if spec.track:
        from ..train import UpdateTracker

        tracker = UpdateTracker(
            str(out / "tracker"), every=max(1, spec.steps // 4), base_dtype=torch.bfloat16
        )
        tracker.attach(model, opt)
    step_fn = _STEPS[spec.algo](model, tok, data, spec)
    every = max(1, spec.steps // 6)
    quiet_bar = bars_allowed() and progress
    with progress_bar(spec.steps, f"{spec.name} ({spec.algo})", enabled=progress, unit="step") as bar:
        for k in range(1, spec.steps + 1):
            ts = time.time()
            loss, metrics = step_fn(k)
            loss.backward()
            if spec.max_grad_norm > 0:
                metrics["grad_norm"] = float(
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in model.parameters() if p.requires_grad], spec.max_grad_norm
                    )
                )
            opt.step()
            opt.zero_grad(set_to_none=True)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"{spec.name}: loss became {lv} at step {k}")
            metrics["seconds"] = time.time() - ts
            log.losses.append(lv)
            log.metrics.append(metrics)
            bar.update(1)
            bar.set_postfix_str(f"loss {lv:.4f}")
            if progress and not quiet_bar and (k % every == 0 or k == spec.steps):
                _log(f"  {spec.name}: step {k}/{spec.steps} loss {lv:.4f} ({metrics['seconds']:.1f} s/step)")
            if spec.save_every and k % spec.save_every == 0 and k < spec.steps:
                ck = out / "checkpoints" / f"checkpoint-{k}"
                save_bf16(model, base_dir, ck, names)
                log.checkpoints.append(str(ck.relative_to(out)))
    save_bf16(model, base_dir, out, names)
    if spec.save_every:
        log.checkpoints.append(".")
    if tracker is not None:
        tracker.save()
        log.extra["tracker"] = "tracker"
    if handle is not None:
        log.extra["frozen_changed"] = int(handle.verify())
        handle.remove()
    log.seconds = time.time() - t0
    log.extra["cpu_seconds"] = time.process_time() - c0
    log.extra["threads"] = torch.get_num_threads()
    return log
