"""The repository's root, for tests that read its files (examples/, docker/, k8s/): found
from this module, so a test module means the same files wherever it sits under tests/."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
