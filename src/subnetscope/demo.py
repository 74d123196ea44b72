"""``make demo``: build a small synthetic base/target pair and compare them (replaced by the SmolLM2 demo)."""

from __future__ import annotations

from pathlib import Path


def main() -> None:
    """Run the demo with no arguments."""
    import numpy as np
    from safetensors.numpy import save_file

    from .comparison import compare
    from .report.table import render_compare

    out = Path(".cache/demo")
    rng = np.random.default_rng(0)
    names = {f"model.layers.{i}.self_attn.q_proj.weight": (256, 256) for i in range(4)}
    base = {n: (rng.standard_normal(s) * 0.02).astype(np.float32) for n, s in names.items()}
    target = {n: np.where(rng.random(v.shape) < 0.2, v * 1.01, v).astype(np.float32) for n, v in base.items()}
    (out / "base").mkdir(parents=True, exist_ok=True)
    (out / "target").mkdir(parents=True, exist_ok=True)
    save_file(base, str(out / "base" / "model.safetensors"))
    save_file(target, str(out / "target" / "model.safetensors"))
    print(render_compare(compare(out / "base", out / "target")))


if __name__ == "__main__":
    main()
