"""sync on real training: 20 AdamW steps (fp32 masters, bf16 weights), two processes, a TRL trainer."""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from subnetscope import sync
from subnetscope.cli import main
from sync_helpers import n_differ, same_bits, sync_once
from train_helpers import tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _bf16_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, g: torch.Generator, vocab: int) -> None:
    ids = torch.randint(0, vocab, (4, 12), generator=g)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("lr", [1e-5, 1e-3])
def test_bit_exact_after_each_of_20_adamw_steps(lr):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=0, tied=True)  # fp32 masters
    rollout = copy.deepcopy(model).to(torch.bfloat16)  # the engine's bf16 weights
    sender = sync.Sender(model, dtype=torch.bfloat16)
    receiver = sync.Receiver(rollout)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    prev = _bf16_state(model)
    total = 0
    for step in range(20):
        _step(model, opt, g, len(tok))
        now = _bf16_state(model)
        expected = sum(n_differ(prev[k], now[k]) for k in now if k != "lm_head.weight")  # tied: counted once
        patch = sync_once(sender, receiver, verify=step % 5 == 4)
        assert patch.version == step + 1 and patch.stats.changed == expected
        for k, v in rollout.state_dict().items():
            assert same_bits(v, now[k]), (step, k)
        assert receiver.digest() == sender.digest()
        prev = now
        total += expected
    assert rollout.lm_head.weight is rollout.model.embed_tokens.weight
    assert total > 0


_CHILD = r"""
import json, struct, sys
from safetensors.torch import load_file
from subnetscope import sync
state = load_file(sys.argv[1])
receiver = sync.Receiver(state)
src = sys.stdin.buffer
while True:
    head = src.read(8)
    if not head:
        break
    (n,) = struct.unpack("<Q", head)
    receiver.apply(src.read(n), verify=True)
d = receiver.digest()
print(json.dumps({"version": receiver.version, "digest": d.model, "tensors": dict(d.tensors)}))
"""


def test_sender_and_receiver_in_two_processes_over_a_pipe(tmp_path):
    from safetensors.torch import save_file

    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=1)
    save_file({k: v.contiguous() for k, v in _bf16_state(model).items()}, str(tmp_path / "start.safetensors"))
    sender = sync.Sender(model, dtype=torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "start.safetensors")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)  # fmt: skip
    assert child.stdin is not None
    for _ in range(5):
        _step(model, opt, g, len(tok))
        blob = sender.diff().to_bytes()
        child.stdin.write(struct.pack("<Q", len(blob)) + blob)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    got = json.loads(out)
    mine = sender.digest()
    assert got["version"] == 5 and got["digest"] == mine.model and got["tensors"] == dict(mine.tensors)


def test_trl_trainer_with_sync_callback_then_cli_replay_and_inspect(tmp_path, capsys):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=2, tied=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path / "base")  # what the engines start from
    tok.save_pretrained(tmp_path / "base")
    data = Dataset.from_list([{"text": t} for t in ["the cat sat on the mat", "what color is the sky blue",
                                                      "one two three four five", "the dog is big"] * 4])  # fmt: skip
    cfg = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=5, learning_rate=1e-3, per_device_train_batch_size=2,
                    logging_steps=1, report_to="none", use_cpu=True, bf16=False, save_strategy="no",
                    disable_tqdm=True, seed=0, max_length=16)  # fmt: skip
    cb = sync.SyncCallback(tmp_path / "sync", every=2)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[cb])
    trainer.train()
    # every 2 optimizer steps, and the last (odd) step at the end of training
    stream, entries = sync.stream.read_manifest(tmp_path / "sync")
    assert [e.version for e in entries] == [1, 2, 3] and [e.meta["step"] for e in entries] == [2, 4, 5]
    assert stream == cb.sender.stream and all(e.kind == "diff" and e.changed > 0 for e in entries)
    untied = {k: v for k, v in _bf16_state(model).items() if k != "lm_head.weight"}
    assert cb.sender.digest() == sync.Receiver(untied).digest()
    # rebuild step 4 and the last step from the base with the CLI
    for to, name in ((2, "v2"), (None, "last")):
        args = ["sync", "replay", str(tmp_path / "base"), str(tmp_path / "sync"), "-o", str(tmp_path / name)]
        main([*args, "--verify"] + ([] if to is None else ["--to", str(to)]))
    last = load_file(str(tmp_path / "last" / "model.safetensors"))
    now = _bf16_state(model)
    assert set(last) == set(now) - {"lm_head.weight"}
    for k, v in last.items():
        assert same_bits(v, now[k]), k
    assert (tmp_path / "last" / "config.json").is_file() and (tmp_path / "last" / "tokenizer.json").is_file()
    v2 = load_file(str(tmp_path / "v2" / "model.safetensors"))
    assert any(not same_bits(v2[k], last[k]) for k in last)
    capsys.readouterr()
    main(["sync", "inspect", str(tmp_path / "sync")])
    text = capsys.readouterr().out
    assert f"stream {stream}: 3 patch(es)" in text and "{'step': 4}" in text
    main(["sync", "inspect", str(tmp_path / "sync" / "00000002.patch"), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 2 and doc["parent"] == 1 and doc["changed"] == entries[1].changed


def test_cli_errors_are_one_line(tmp_path, capsys):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=3)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "base")
    other = tiny_llama(tok, seed=4).to(torch.bfloat16)
    w = sync.stream.PatchWriter(tmp_path / "sync")
    s = sync.Sender(other)
    with torch.no_grad():
        other.model.norm.weight.add_(1)
    w.write(s.diff())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["sync", "replay", str(tmp_path / "base"), str(tmp_path / "sync"), "-o", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("subnetscope: error: ")
        and "applies on a state with digest" in err[0]
    )
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(
            [
                "sync",
                "replay",
                str(tmp_path / "base"),
                str(tmp_path / "sync"),
                "-o",
                str(tmp_path / "o"),
                "--to",
                "9",
            ]
        )
    assert "has no version 9 (versions 1..1)" in capsys.readouterr().err
    (tmp_path / "bad.patch").write_bytes(b"\x93SNSYNC\x01" + b"\0" * 60)
    with pytest.raises(SystemExit):
        main(["sync", "inspect", str(tmp_path / "bad.patch")])
    assert "bad.patch: declares a length of 0 bytes (damaged)" in capsys.readouterr().err
