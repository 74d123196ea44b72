"""Resolve what the user typed (a local path or a hub id ``org/name[@revision]``) to local files.

Local paths win: if the path exists it is used as is. Otherwise the argument must look like a hub id and
is fetched with :func:`huggingface_hub.snapshot_download`, downloading only ``*.json`` and
``*.safetensors`` into the standard cache; a repository without safetensors weights then gets its legacy
``pytorch_model*.bin`` shards (read with ``torch.load(weights_only=True)``, never unpickled freely).
``HF_HUB_OFFLINE=1`` is honoured (cache only).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import HubError, InputNotFoundError
from .io.checkpoint import Checkpoint, open_checkpoint

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(?:@(?P<rev>[\w.\-/]+))?$")

#: files fetched from the hub: configs, tokenizer files and safetensors weights
ALLOW_PATTERNS = ["*.json", "*.safetensors"]
#: fetched second, only when the first fetch brought no safetensors weights (a legacy repository)
LEGACY_PATTERNS = ["pytorch_model*.bin"]


def parse_hub_id(ref: str) -> tuple[str, str | None] | None:
    """``"org/name@rev"`` → ``("org/name", "rev")``; None if ``ref`` is not shaped like a hub id."""
    m = _HUB_ID.match(ref)
    if not m:
        return None
    return m.group("repo"), m.group("rev")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_path(ref: str | os.PathLike[str]) -> Path:
    """Local path for ``ref``: the path itself if it exists, else a hub snapshot directory."""
    p = Path(ref)
    if p.exists():
        return p
    s = str(ref)
    hub = parse_hub_id(s)
    if hub is None or s.startswith((".", "/", "~")):
        raise InputNotFoundError(
            f"{s}: no such file or directory",
            "give a checkpoint directory, a .safetensors file, or a hub id like org/name[@revision]",
        )
    repo, rev = hub
    return _download(repo, rev)


def _download(repo: str, rev: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    label = f"{repo}@{rev}" if rev else repo
    try:
        path = Path(snapshot_download(repo_id=repo, revision=rev, allow_patterns=ALLOW_PATTERNS))
        if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
            path = Path(snapshot_download(repo_id=repo, revision=rev, allow_patterns=LEGACY_PATTERNS))
    except LocalEntryNotFoundError:
        if _offline():
            raise HubError(
                f"{label}: not a local path, and not in the Hugging Face cache while HF_HUB_OFFLINE is set",
                "download it once with network access (or unset HF_HUB_OFFLINE), or give a local path",
            ) from None
        raise HubError(
            f"{label}: could not reach the Hugging Face hub and it is not in the local cache",
            "check the network (or HF_ENDPOINT), or give a local path",
        ) from None
    except GatedRepoError:
        raise HubError(
            f"{label}: the repository is gated", "accept its terms on the hub and log in (hf auth login)"
        ) from None
    except RevisionNotFoundError:
        raise HubError(
            f"{label}: revision {rev!r} does not exist", "check the branch, tag or commit"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{label}: no such repository on the hub (or it is private)",
            "check the id, or log in (hf auth login) for a private one",
        ) from None
    except OSError as e:
        raise HubError(
            f"{label}: download failed ({e})", "retry, or download it by hand and give the path"
        ) from None
    return path


def load_checkpoint(ref: str | os.PathLike[str]) -> Checkpoint:
    """Resolve ``ref`` (path or hub id) and index its tensors from headers only."""
    return open_checkpoint(resolve_path(ref), ref=str(ref))
