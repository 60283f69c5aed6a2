"""``tools/gen_spec.py`` reproduces the committed ``api.json`` from ``../shared/spec``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "spec"
COMMITTED = ROOT / "src" / "openxapi" / "spec" / "data" / "api.json"


def test_gen_spec_reproduces_api_json(tmp_path: Path) -> None:
    assert SOURCE.is_dir(), f"the shared API description is missing: {SOURCE}"
    for name in ("xenapi.json", "async.json", "datamodel-extras.json"):
        assert (SOURCE / name).is_file(), f"missing {SOURCE / name}"
    out = tmp_path / "api.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "gen_spec.py"),
            "--source",
            str(SOURCE),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == COMMITTED.read_bytes()
