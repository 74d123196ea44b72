"""A tiny random Llama with an offline tokenizer: the miniature study runs on it in seconds (tests, smoke runs).

The tokenizer is a byte-level BPE trained on the fly on the built-in data (no download), with the ChatML
special tokens and chat template SmolLM2 uses, so every code path of the real study runs unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .data import PROMPT_SETS, addition_problems, sft_examples

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on the built-in corpora (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [e.prompt + " " + e.response for e in sft_examples(200)]
    corpus += [p for ps in PROMPT_SETS.values() for p in ps]
    corpus += [p.prompt for p in addition_problems(50)]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


#: rows of the tiny model's (tied) embedding: the tokenizer's 512 tokens, padded as Qwen2 pads its
#: 151,643 tokens to 151,936 rows. The padding gives the language-model head a long inner product, like
#: SmolLM2's 49,152 rows: MKL splits such a product across threads (see :mod:`.numerics`), so the
#: miniature study exercises what makes the thread count matter in the real one.
PADDED_VOCAB = 16384


def make_tiny_base(
    out: str | os.PathLike[str],
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    vocab_size: int = 512,
    padded_vocab: int = PADDED_VOCAB,
) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` (bf16 safetensors, tied embeddings of ``padded_vocab``
    rows) and its tokenizer of ``vocab_size`` tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(vocab_size)
    cfg = LlamaConfig(
        vocab_size=max(len(tok), padded_vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model: Any = LlamaForCausalLM(cfg)
    model = model.to(torch.bfloat16)
    p = Path(out)
    model.save_pretrained(str(p), safe_serialization=True)
    tok.save_pretrained(str(p))
    return p
