"""What an engine's numbers depend on besides a unit's tokens: its identity.

DESIGN.md §3 and §5: every input of a label but the model is in a unit's token ids, so the
label cache keys on those ids and on this identity: the model's name, a revision (a digest
of the checkpoint on disk, else what the engine reports) and the dtype the engine really
runs in, read back from vLLM, never a setting such as "auto" (a bf16 and an fp32 engine
behind one name must not share entries).

The reasoning at length: docs/internals.md, section "engine/identity.py".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# Weight files whose names, sizes and ends go into a checkpoint's digest.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Bytes read from each end of a weight file: a retrained checkpoint keeps its names and
# sizes but not its numbers, and these bytes hold numbers (after a short header).
_SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class EngineIdentity:
    model: str
    revision: str
    dtype: str

    def key(self) -> str:
        return "\0".join((self.model, self.revision, self.dtype))


def dtype_name(dtype: object) -> str:
    """vLLM's resolved dtype (a torch.dtype) as a name: torch.float32 -> "float32"."""
    return str(dtype).removeprefix("torch.")


def checkpoint_digest(model: str) -> str:
    """sha256 over a local checkpoint's config.json and, per weight file, its name, size
    and first and last MiB; "" when `model` is not a local directory (a hub ID)."""
    root = Path(model)
    if not root.is_dir():
        return ""
    digest = hashlib.sha256()
    config = root / "config.json"
    if config.is_file():
        # Canonical JSON: the same settings written with other spacing are the same model.
        digest.update(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
    weights = sorted(
        p for p in root.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    )
    for path in weights:
        size = path.stat().st_size
        digest.update(f"\0{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_SAMPLE_BYTES))
            if size > 2 * _SAMPLE_BYTES:
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read(_SAMPLE_BYTES))
    return f"sha256:{digest.hexdigest()}"


def local_model_label(model: str) -> str:
    """A checkpoint directory's name (its path differs between machines that share one
    cache), or the hub ID as given."""
    root = Path(model)
    return root.name if root.is_dir() else model
