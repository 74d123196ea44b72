"""Subnetwork DPO and GRPO with TRL on a tiny random Llama: frozen entries byte-identical, tracker = diff."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset
from safetensors.torch import load_file
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

import subnetscope
from subnetscope.errors import MaskMismatchError
from subnetscope.maskfile import MaskFile
from subnetscope.train import SubnetworkCallback, UpdateTracker
from train_helpers import bits_differ, mask_file_for, tiny_llama, tiny_tokenizer

PAIRS = [
    ("what color is the sky", "blue", "red"),
    ("what color is the grass", "green", "blue"),
    ("is the cat big", "yes", "no"),
    ("two is good", "yes good", "no bad"),
]
PROMPTS = ["what color is the sky", "is the cat big", "one two three", "the dog sat"]


class Recorder(TrainerCallback):
    """Stands in for a reporting callback (TensorBoard, W&B): keeps what on_log hands it."""

    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(tokenizer, base directory, base state, mask path, trainable masks)."""
    root = tmp_path_factory.mktemp("trl")
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=0)
    model.save_pretrained(root / "base")
    state = load_file(str(root / "base" / "model.safetensors"))
    path, chosen = mask_file_for(state, root, density=0.3, seed=1)
    return tok, root / "base", state, path, chosen


def load_base(tok, base_dir):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)


def common_args(out, **kw):
    return dict(
        output_dir=str(out), max_steps=3, learning_rate=1e-2, weight_decay=0.1, logging_steps=1, report_to="none",
        use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True, seed=0, **kw,
    )  # fmt: skip


def check_run(trainer, tracker, cb, setup, out_dir):
    """Byte-identity of frozen entries in the saved weights, and the tracker against their diff."""
    _, base_dir, base_state, _, chosen = setup
    assert cb.changed_frozen == 0
    trainer.save_model(str(out_dir))
    saved = load_file(str(out_dir / "model.safetensors"))
    moved = 0
    for name, base in base_state.items():
        d = bits_differ(saved[name], base)
        assert not (d & ~chosen[name]).any(), f"frozen entries of {name} changed"
        moved += int(d.sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in chosen.values())
    # the tracker's counts equal a diff of the saved weights made with the compare engine
    report = subnetscope.compare(base_dir, out_dir, tolerances=[1e-5], jobs=1)
    split = tracker.split()
    assert split["final_subnetwork"] == report.overall.numel - report.overall.identical == moved
    assert split["numel"] == report.overall.numel
    doc = json.loads((tracker.output_dir / "tracker.json").read_text())
    by_name = {t["name"]: t for t in doc["tensors"]}
    for t in report.tensors:
        assert by_name[t.name]["final_changed"] == t.counts.numel - t.counts.identical, t.name
    assert len(doc["steps"]) == 3
    ever = MaskFile(tracker.output_dir / "ever_changed.mask")
    for name in base_state:
        assert not (torch.from_numpy(ever[name].copy()) & ~chosen[name]).any(), name


def test_dpo_subnetwork(setup, tmp_path):
    tok, base_dir, _, mask_path, _ = setup
    model = load_base(tok, base_dir)
    data = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
          "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS * 2]
    )  # fmt: skip
    cfg = DPOConfig(**common_args(tmp_path / "out", per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                  max_length=32, max_grad_norm=0.5))  # fmt: skip
    cb, tracker, rec = SubnetworkCallback(mask_path), UpdateTracker(tmp_path / "track", every=1), Recorder()
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=cfg, train_dataset=data,
                         processing_class=tok, callbacks=[cb, rec, tracker])  # fmt: skip
    tracker.install(trainer)
    assert trainer.callback_handler.callbacks[0] is tracker
    trainer.train()
    check_run(trainer, tracker, cb, setup, tmp_path / "saved")
    # the scalars reach callbacks that come after the tracker (reporting callbacks, once installed first)
    logged = [r for r in rec.logs if "subnet/ever_changed" in r]
    assert logged and 0 < logged[-1]["subnet/ever_changed"] <= 0.3 + 0.05


def reward_len(completions, **kwargs):
    """Rule-based reward: completions of three words are best."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [-abs(len(t.split()) - 3.0) for t in texts]


def test_grpo_subnetwork(setup, tmp_path):
    tok, base_dir, _, mask_path, _ = setup
    model = load_base(tok, base_dir)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS * 2])
    cfg = GRPOConfig(**common_args(tmp_path / "out", per_device_train_batch_size=4, num_generations=4,
                                   max_completion_length=6))  # fmt: skip
    cb, tracker = SubnetworkCallback(mask_path), UpdateTracker(tmp_path / "track", every=2)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_len, args=cfg, train_dataset=data,
                          processing_class=tok, callbacks=[cb, tracker])  # fmt: skip
    trainer.train()
    check_run(trainer, tracker, cb, setup, tmp_path / "saved")


def test_trainer_refuses_mask_of_another_model(setup, tmp_path):
    tok, _, _, mask_path, _ = setup
    other = tiny_llama(tok, seed=7)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    cfg = GRPOConfig(**common_args(tmp_path / "out", per_device_train_batch_size=4, num_generations=4,
                                   max_completion_length=4))  # fmt: skip
    trainer = GRPOTrainer(model=other, reward_funcs=reward_len, args=cfg, train_dataset=data,
                          processing_class=tok, callbacks=[SubnetworkCallback(mask_path)])  # fmt: skip
    with pytest.raises(
        MaskMismatchError,
        match=r"mask was made against a base with other weights than the given model \(LlamaForCausalLM\)",
    ):
        trainer.train()
    wider = tiny_llama(tok, seed=0, hidden=48)
    with pytest.raises(MaskMismatchError, match=r"has shape .* in the mask but .* in the model"):
        SubnetworkCallback(mask_path).on_train_begin(cfg, trainer.state, trainer.control, model=wider,
                                                     optimizer=torch.optim.AdamW(wider.parameters()))  # fmt: skip
