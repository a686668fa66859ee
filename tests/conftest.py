from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.demo_data import make_demo_data


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small demo pair (real formats): 200 AVA images, 120 of them also in EVA."""
    root = tmp_path_factory.mktemp("demo")
    make_demo_data(root, n_ava=200, n_eva=120, size=96, seed=0)
    return root


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def jpeg(path: Path, size: int = 32, colour=(120, 80, 40)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path
