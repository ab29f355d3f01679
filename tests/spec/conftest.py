"""Fixtures for the spec/ tests (the repository-wide tests/conftest.py belongs to others)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `import spec` must work however pytest was started
    sys.path.insert(0, str(REPO))
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # spec_testlib lives next to this file
    sys.path.insert(0, HERE)

OFFICIAL_DIR = REPO.parent / "shared" / "oci-runtime-spec-v1.3.0"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The OCI runtime-spec v1.3.0 schemas and fixtures, or skip when they are absent."""
    if not (OFFICIAL_DIR / "config-schema.json").is_file():
        pytest.skip(f"OCI runtime-spec v1.3.0 schema files not found at {OFFICIAL_DIR}")
    return OFFICIAL_DIR
