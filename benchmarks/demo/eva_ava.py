"""A small EVA + AVA pair in the real file formats, made from bundled photographs.

Every image is a crop of a real photograph (scikit-image's and matplotlib's
bundled samples) with two graded, known degradations: Gaussian blur and
Gaussian noise, at independent levels. The two datasets score the same
pictures by different rules, as two crowds of voters would:
AVA's voters punish blur, EVA's punish noise. A model that learns AVA after
EVA therefore un-learns EVA: the forgetting the suite exists to measure.

EVA ids are a subset of AVA ids with byte-identical pictures, as in reality.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# (loader name, EVA content category 1..6). Greyscale sources stay greyscale
# JPEGs, as some real AVA photos are.
SOURCES = [
    ("chelsea", 1), ("brick", 2), ("astronaut", 3), ("camera", 3),
    ("grace_hopper", 3), ("grass", 4), ("gravel", 4), ("moon", 4), ("hubble_deep_field", 4),
    ("coffee", 5), ("coins", 5), ("clock", 5), ("rocket", 6), ("stereo_motorcycle", 6),
    ("immunohistochemistry", 6),
]
LEVELS = np.linspace(0.0, 1.0, 5)
MAX_BLUR_SIGMA = 2.5
MAX_NOISE_STD = 40.0


def _source_image(name: str) -> Image.Image:
    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            return Image.open(io.BytesIO(fh.read())).convert("RGB")
    import skimage.data

    arr = getattr(skimage.data, name)()
    if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
        arr = arr[0]
    return Image.fromarray(arr)


def _degrade(img: Image.Image, blur: float, noise: float, rng: np.random.Generator) -> Image.Image:
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(MAX_BLUR_SIGMA * blur))
    arr = np.asarray(img, dtype=np.float32)
    if noise > 0:
        arr = arr + rng.normal(0.0, MAX_NOISE_STD * noise, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _crop(img: Image.Image, size: int | tuple[int, int],
          rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    if not isinstance(size, int):  # (width, height), e.g. AVA-sized 500 x 375
        tw, th = size
        k = rng.uniform(0.4, 0.9) * min(w / tw, h / th)
        cw, ch = int(tw * k), int(th * k)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch)).resize((tw, th), Image.Resampling.LANCZOS)
    side = int(min(w, h) * rng.uniform(0.4, 0.9))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    return img.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.LANCZOS)


def _ava_votes(score: float, rng: np.random.Generator) -> list[int]:
    n = int(rng.integers(80, 250))
    votes = np.clip(np.rint(rng.normal(score, 1.4, size=n)), 1, 10).astype(int)
    return np.bincount(votes, minlength=11)[1:].tolist()


def make_demo_data(out: str | Path, *, n_ava: int = 600, n_eva: int = 360,
                   size: int | tuple[int, int] = 160, seed: int = 0) -> dict[str, int]:
    """Write `out/EVA` and `out/AVA` in their real layouts; returns image counts.

    `size`: square side, or (width, height) such as AVA's typical (500, 375).
    """
    if n_eva > n_ava:
        raise ValueError("EVA is a subset of AVA: n_eva must not exceed n_ava")
    rng = np.random.default_rng(seed)
    out = Path(out)
    eva, ava = out / "EVA", out / "AVA"
    for d in (eva / "data", eva / "images" / "EVA_together", ava / "images",
              ava / "aesthetics_image_lists"):
        d.mkdir(parents=True, exist_ok=True)

    sources = [(_source_image(name), cat) for name, cat in SOURCES]
    ids = rng.choice(np.arange(100_000, 999_999), size=n_ava, replace=False)
    ava_rows, eva_votes, categories = [], [], []
    eva_set = set(rng.choice(n_ava, size=n_eva, replace=False).tolist())
    for i, image_id in enumerate(ids):
        src, category = sources[i % len(sources)]
        blur, noise = float(rng.choice(LEVELS)), float(rng.choice(LEVELS))
        img = _degrade(_crop(src, size, rng), blur, noise, rng)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        (ava / "images" / f"{image_id}.jpg").write_bytes(buf.getvalue())
        # The two crowds' rules: AVA punishes blur, EVA punishes noise.
        ava_true = 8.0 - 5.5 * blur + rng.normal(0, 0.25)
        counts = _ava_votes(ava_true, rng)
        tags = rng.integers(0, 60, size=2).tolist()
        ava_rows.append([i + 1, int(image_id), *counts, *tags, int(rng.integers(1, 1500))])
        if i in eva_set:
            (eva / "images" / "EVA_together" / f"{image_id}.jpg").write_bytes(buf.getvalue())
            eva_true = 8.5 - 6.5 * noise + rng.normal(0, 0.25)
            for user in rng.choice(np.arange(1, 2000), size=int(rng.integers(30, 47)),
                                   replace=False):
                vote = int(np.clip(np.rint(rng.normal(eva_true, 1.5)), 0, 10))
                eva_votes.append([
                    int(image_id), int(user), vote, *rng.integers(1, 5, size=5).tolist(),
                    f"2019-0{int(rng.integers(1, 10))}-1{int(rng.integers(0, 10))} "
                    f"1{int(rng.integers(0, 10))}:{int(rng.integers(10, 60))}:00",
                    *rng.integers(0, 2, size=4).tolist(),
                ])
            categories.append((int(image_id), category))

    write_ava_labels(ava, ava_rows, rng.choice(ids, size=len(ids) // 5, replace=False))
    write_eva_labels(eva, eva_votes, categories)
    (out / ".complete").write_text(f"seed={seed} n_ava={n_ava} n_eva={n_eva}\n")
    return {"AVA": n_ava, "EVA": n_eva}


def write_ava_labels(ava: Path, rows: list[list], test_ids) -> None:
    """AVA.txt (index, id, 10 vote counts, 2 tags, challenge) and generic_test.jpgl."""
    (ava / "aesthetics_image_lists").mkdir(parents=True, exist_ok=True)
    with open(ava / "AVA.txt", "w") as fh:
        fh.writelines(" ".join(str(v) for v in row) + "\n" for row in rows)
    (ava / "aesthetics_image_lists" / "generic_test.jpgl").write_text(
        "".join(f"{int(i)}\n" for i in sorted(test_ids)))


def write_eva_labels(eva: Path, votes: list[list], categories: list[tuple[int, int]]) -> None:
    """votes_filtered.csv ('='-separated) and image_content_category.csv, as EVA ships them."""
    (eva / "data").mkdir(parents=True, exist_ok=True)
    header = ["image_id", "user_id", "score", "difficulty", "visual", "composition", "quality",
              "semantic", "vote_time", "1", "2", "3", "4"]
    with open(eva / "data" / "votes_filtered.csv", "w") as fh:
        fh.write("=".join(header) + "\n")
        fh.writelines("=".join(str(v) for v in row) + "\n" for row in votes)
    # The real category file has a UTF-8 BOM and quotes every field.
    with open(eva / "data" / "image_content_category.csv", "w", encoding="utf-8-sig",
              newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        writer.writerow(["image_id", "sort"])
        writer.writerows(sorted(categories))
