"""Helpers for the training tests: tiny models, an offline tokenizer, masks with known bits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from subnetscope.comparison import compare

WORDS = [
    "the", "cat", "dog", "sat", "on", "mat", "a", "red", "blue", "big", "small", "yes", "no", "good", "bad",
    "one", "two", "three", "four", "five", "answer", "is", "what", "color", "sky", "grass", "green",
]  # fmt: skip

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


class TinyNet(torch.nn.Module):
    """Embedding, two linears, a norm and a head: enough for every optimizer path."""

    def __init__(self, vocab: int = 32, hidden: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.fc1 = torch.nn.Linear(hidden, 2 * hidden)
        self.fc2 = torch.nn.Linear(2 * hidden, hidden)
        self.norm = torch.nn.LayerNorm(hidden)
        self.head = torch.nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(self.norm(h))


def tiny_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyNet:
    """A seeded :class:`TinyNet`."""
    torch.manual_seed(seed)
    return TinyNet().to(dtype)


def batches(n: int, seed: int = 0, batch: int = 8, length: int = 6, vocab: int = 32) -> list[torch.Tensor]:
    """``n`` random token batches."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, length), generator=g) for _ in range(n)]


def lm_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy."""
    logits = model(ids[:, :-1])
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)
    )


def random_masks(model: torch.nn.Module, density: float = 0.3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Parameter name → random bool tensor (True = trainable)."""
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters()}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def bits_differ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: the raw bits differ."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.contiguous().view(view) != b.contiguous().view(view)


def save_state(state: dict[str, torch.Tensor], root: Path) -> Path:
    """Save a state dict as a one-file checkpoint directory."""
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(root / "model.safetensors"))
    return root


def mask_file_for(
    state: dict[str, torch.Tensor], tmp: Path, density: float = 0.3, seed: int = 0, name: str = "run.mask"
) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real mask file over ``state`` (via ``compare --mask-out``) whose True bits are known.

    The target changes each chosen element by a large relative step, so |Δ| > 1e-5 exactly there.
    """
    g = torch.Generator().manual_seed(seed)
    chosen = {k: torch.rand(v.shape, generator=g) < density for k, v in state.items()}
    target = {}
    for k, v in state.items():
        bumped = (v.float() * 1.5 + torch.where(v >= 0, 0.01, -0.01)).to(v.dtype)
        target[k] = torch.where(chosen[k], bumped, v)
    base_dir = save_state(state, tmp / f"{name}.base")
    tgt_dir = save_state(target, tmp / f"{name}.target")
    path = tmp / name
    compare(base_dir, tgt_dir, [1e-5], mask_out=path, jobs=1)
    return path, chosen


# ---- tiny Llama and an offline tokenizer ---------------------------------------------------------------------
def tiny_tokenizer() -> Any:
    """A word-level tokenizer with a chat template, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    extra = ["user", "assistant", "system", ":"]
    vocab = {w: i for i, w in enumerate(specials + extra + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(tokenizer: Any, seed: int = 0, tied: bool = False, hidden: int = 32) -> Any:
    """A randomly initialised 2-layer Llama (fp32) sized to ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=tied,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).float()


# ---- DDP (gloo, CPU) -------------------------------------------------------------------------------------------
def ddp_worker(rank: int, world: int, init_file: str, out_dir: str, masks: dict[str, torch.Tensor]) -> None:
    """One rank of a 2-process DDP run with the mask attached; writes its results to ``out_dir``."""
    import torch.distributed as dist

    from subnetscope.train import SubnetworkMask

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = tiny_net(seed=0)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.1)
        handle = SubnetworkMask(model, masks).attach(model, opt)
        norms = []
        for ids in batches(3, seed=100 + rank):
            lm_loss(ddp, ids).backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(ddp.parameters(), 0.05)))
            opt.step()
            opt.zero_grad()
        torch.save(
            {"norms": norms, "bad": handle.verify(), "state": snapshot(model)}, f"{out_dir}/rank{rank}.pt"
        )
    finally:
        dist.destroy_process_group()
