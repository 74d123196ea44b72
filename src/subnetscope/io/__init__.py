"""Reading checkpoints (headers, chunks) and writing outputs atomically."""

from .atomic import atomic_dir, atomic_file
from .checkpoint import Checkpoint, open_checkpoint
from .reader import ChunkReader
from .safetensors_header import TensorInfo, read_header

__all__ = [
    "Checkpoint",
    "ChunkReader",
    "TensorInfo",
    "atomic_dir",
    "atomic_file",
    "open_checkpoint",
    "read_header",
]
