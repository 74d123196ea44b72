"""Datasets and training runs, cached by what determines them.

A run is stored under ``<cache>/runs/<name>-<key>/`` where ``key`` hashes the recipe version, the run's
hyperparameters, its dataset's content key, the base's fingerprint and (for a subnetwork run) the mask's
digest; the directory appears atomically when training is complete, with ``run.json`` (spec, losses, time)
beside a loadable bf16 model. Asking for the same run again is instant. Self-sampled preference pairs are
cached the same way under ``<cache>/data/``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.atomic import atomic_dir, write_text_atomic
from .config import DataSpec, RunSpec
from .data import addition_problems, choose, dpo_prompts, sft_examples
from .numerics import mode_id
from .recipes import RECIPE_VERSION, Pair, TrainLog, train

if TYPE_CHECKING:
    from .numerics import NumericsWorker

DATA_VERSION = "1"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def digest(obj: Any, n: int = 12) -> str:
    """Short sha256 of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def base_identity(base_dir: str | Path) -> str:
    """Short fingerprint of the base checkpoint (names, shapes, dtypes and sampled content)."""
    from ..fingerprint import of_checkpoint
    from ..io.checkpoint import open_checkpoint

    ck = open_checkpoint(Path(base_dir))
    return of_checkpoint(ck, list(ck.tensors)).short()


def data_key(spec: DataSpec, base_id: str) -> str:
    """Cache key of a dataset (sampled pairs depend on the base and on the numerics mode, see
    :mod:`.numerics`; built-in data does not)."""
    sampled = spec.kind == "pairs"
    return digest(
        {
            "v": DATA_VERSION,
            **spec.key_fields(),
            "base": base_id if sampled else None,
            **({"numerics": mode_id()} if sampled else {}),
        }
    )


def sample_pairs(spec: DataSpec, base_dir: str | Path, progress: bool = True) -> list[Pair]:
    """Sample two completions per prompt from the base and label them with ``spec.rule`` (pairs the rule
    cannot tell apart are dropped; prompts are drawn until ``spec.n`` pairs exist or 4·n prompts were tried)."""
    from ..progress import progress_bar
    from .lm import decode, load_for_training, prompt_ids, sample

    model, tok = load_for_training(base_dir)
    pairs: list[Pair] = []
    prompts = dpo_prompts(spec.prompts, 4 * spec.n, seed=spec.seed)
    batch = 32
    with progress_bar(spec.n, f"sampling pairs ({spec.name})", enabled=progress, unit="pair") as bar:
        for i in range(0, len(prompts), batch // 2):
            chunk = prompts[i : i + batch // 2]
            ids = [prompt_ids(tok, p) for p in chunk]
            comps = sample(
                model,
                tok,
                [x for x in ids for _ in range(2)],
                spec.max_new_tokens,
                spec.temperature,
                seed=spec.seed * 7919 + i,
                batch_size=batch,
            )
            for j, p in enumerate(chunk):
                a, b = comps[2 * j], comps[2 * j + 1]
                pick = choose(p, decode(tok, a), decode(tok, b), spec.rule)
                if pick is None:
                    continue
                chosen, rejected = (a, b) if pick[0] == decode(tok, a) else (b, a)
                pairs.append(Pair(p, chosen, rejected))
                bar.update(1)
                if len(pairs) == spec.n:
                    return pairs
    return pairs


@dataclass
class Dataset:
    """A built dataset and where it is cached."""

    spec: DataSpec
    key: str
    items: list[Any]
    path: Path | None = None


def build_data(
    spec: DataSpec,
    base_dir: str | Path,
    cache: Path,
    base_id: str,
    progress: bool = True,
    worker: NumericsWorker | None = None,
) -> Dataset:
    """The dataset ``spec`` (sampled pairs are cached; the built-in ones are regenerated, instantly).

    Pairs are sampled in ``worker`` when one is given (see :mod:`.numerics`), else in this process."""
    key = data_key(spec, base_id)
    if spec.kind == "sft":
        return Dataset(spec, key, sft_examples(spec.n, spec.seed))
    if spec.kind == "addition":
        return Dataset(spec, key, addition_problems(spec.n, spec.seed))
    path = cache / "data" / f"{spec.name}-{key}.json"
    if path.is_file():
        obj = json.loads(path.read_text())
        return Dataset(spec, key, [Pair(**p) for p in obj["pairs"]], path)
    t0 = time.time()
    pairs = (
        worker.call(sample_pairs, spec, base_dir, progress)
        if worker
        else sample_pairs(spec, base_dir, progress)
    )
    write_text_atomic(
        path,
        json.dumps(
            {
                "spec": asdict(spec),
                "key": key,
                "seconds": time.time() - t0,
                "pairs": [asdict(p) for p in pairs],
            }
        )
        + "\n",
    )
    _log(f"  {len(pairs)} pairs for {spec.name} sampled in {time.time() - t0:.0f} s")
    return Dataset(spec, key, pairs, path)


def run_key(spec: RunSpec, data: Dataset, base_id: str, mask_digest: str | None) -> str:
    """Cache key of a training run (the numerics mode is part of it: see :mod:`.numerics`)."""
    return digest(
        {
            "v": RECIPE_VERSION,
            **spec.key_fields(),
            "data": data.key,
            "base": base_id,
            "mask": mask_digest,
            "numerics": mode_id(),
        }
    )


@dataclass
class RunRecord:
    """A finished run: its model directory and what training logged."""

    spec: RunSpec
    key: str
    path: Path
    log: dict[str, Any]
    cached: bool

    @property
    def checkpoints(self) -> list[Path]:
        """Intermediate checkpoints in step order, the final model last (empty without ``save_every``)."""
        return [self.path / c for c in self.log.get("checkpoints", [])]


def file_digest(path: str | Path) -> str:
    """sha256 (short) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:12]


def ensure_run(
    spec: RunSpec,
    base_dir: str | Path,
    data: Dataset,
    cache: Path,
    base_id: str,
    *,
    mask_path: Path | None = None,
    mask_digest: str | None = None,
    progress: bool = True,
    worker: NumericsWorker | None = None,
) -> RunRecord:
    """The trained run ``spec``: from the cache when it is there, else trained now (and cached).

    ``mask_digest`` identifies the mask in the cache key (default: the digest of the mask file's bytes).
    Training runs in ``worker`` when one is given (see :mod:`.numerics`), else in this process.
    """
    mdig = mask_digest or (file_digest(mask_path) if mask_path is not None else None)
    key = run_key(spec, data, base_id, mdig)
    path = cache / "runs" / f"{spec.name}-{key}"
    meta = path / "run.json"
    if meta.is_file():
        return RunRecord(spec, key, path, json.loads(meta.read_text())["log"], True)
    _log(
        f"training {spec.name}: {spec.algo}, {spec.steps} steps, lr {spec.lr:g}, batch {spec.batch_size}"
        + (f", subnetwork of {spec.mask_from}" if mask_path else "")
    )
    with atomic_dir(path, overwrite=True, owned=lambda _p: None) as tmp:  # our cache's folder for this key
        kw: dict[str, Any] = {"mask_path": mask_path, "progress": progress}
        log: TrainLog = (
            worker.call(train, spec, base_dir, tmp, data.items, **kw)
            if worker
            else train(spec, base_dir, tmp, data.items, **kw)
        )
        if worker:
            log.extra["numerics"] = worker.info
        doc = {
            "spec": asdict(spec),
            "key": key,
            "data": data.key,
            "base": base_id,
            "mask": mdig,
            "recipe_version": RECIPE_VERSION,
            "log": log.to_json(),
        }
        (tmp / "run.json").write_text(json.dumps(doc, indent=1) + "\n")
    _log(f"  {spec.name} done in {log.seconds:.0f} s -> {path}")
    return RunRecord(spec, key, path, log.to_json(), False)
