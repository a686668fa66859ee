"""Small stand-ins of the six continual-BIQA datasets, in their real layouts and formats.

LIVE Release 2, CSIQ, BID, LIVE Challenge (CLIVE), KonIQ-10k and KADID-10k, each in
the folder BIQA_CL expects under data/IQA_Database/ and with the file names, label files
and score conventions of its real download. Every picture is a crop of a real photograph
(scikit-image's and matplotlib's bundled samples, as in `benchmarks.demo.eva_ava`), degraded
the way that dataset's pictures are: the synthetic sets (LIVE, CSIQ, KADID) by their own
distortion types at graded strengths, the authentic sets (BID, CLIVE, KonIQ) by random
mixtures of blur, noise and JPEG compression.

Scores are a deterministic, monotone function of the distortion strength plus small noise,
so a model can learn them, and each dataset has its own rule: the synthetic sets weight their
distortion types differently, BID punishes blur most, CLIVE noise, KonIQ compression. A model
that learns one after another therefore un-learns the earlier ones, which is what a
continual-learning benchmark measures. Everything is deterministic given the seed,
down to the bytes of every file.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from benchmarks.demo import distortions as dist
from benchmarks.demo.eva_ava import SOURCES, _crop, _source_image

FOLDERS = ("databaserelease2", "CSIQ", "BID", "ChallengeDB_release", "koniq-10k", "kadid10k")
MARKER = "biqa demo"

Distort = Callable[[Image.Image, float, np.random.Generator], Image.Image]


# --------------------------------------------------------------------------- file helpers

def _mat(path: Path, variables: dict) -> None:
    """scipy.io.savemat (MATLAB v5), with a fixed header so the bytes are reproducible."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, variables)
    data = buf.getvalue()
    header = b"MATLAB 5.0 MAT-file, Platform: PCWIN64, Created on: Mon Jan 01 00:00:00 2018"
    path.write_bytes(header.ljust(116, b" ") + data[116:])


def _reproducible_zip(data: bytes) -> bytes:
    """An .xlsx with fixed member timestamps and document dates (openpyxl stamps 'now')."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b"2018-01-01T00:00:00Z", body)
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(2018, 1, 1, 0, 0, 0)), body,
                         compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _names(pool: list[str], n: int) -> list[str]:
    """`n` names from `pool`, in order; past its end, numbered repeats (`house2`, ...)."""
    return [pool[i % len(pool)] + ("" if i < len(pool) else str(i // len(pool) + 1))
            for i in range(n)]


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits)


# --------------------------------------------------------------------------- LIVE Release 2

LIVE_REFS = [
    "womanhat", "sailing1", "bikes", "building2", "buildings", "caps", "carnivaldolls",
    "cemetry", "churchandcapitol", "coinsinfountain", "dancers", "flowersonih35", "house",
    "lighthouse", "lighthouse2", "manfishing", "monarch", "ocean", "paintedhouse", "parrots",
    "plane", "rapids", "sailing2", "sailing3", "sailing4", "statue", "stream",
    "studentsculpture", "woman",
]
LIVE_SIZES = [(120, 96), (96, 128), (112, 112), (128, 96), (96, 120)]
# folder, how hard LIVE's raters punish it, the distortion at strength s in (0, 1]
LIVE_TYPES: list[tuple[str, float, Distort]] = [
    ("jp2k", 0.95, lambda im, s, rng: dist.jp2k(im, 6 * 40 ** s)),
    ("jpeg", 1.00, lambda im, s, rng: dist.jpeg(im, round(45 - 42 * s))),
    ("wn", 0.85, lambda im, s, rng: dist.noise(im, 4 + 50 * s, rng)),
    ("gblur", 1.00, lambda im, s, rng: dist.blur(im, 0.3 + 3.7 * s)),
    ("fastfading", 0.90, lambda im, s, rng: dist.lost_blocks(dist.jp2k(im, 10 + 30 * s),
                                                         0.02 + 0.25 * s, rng)),
]


def _live(root: Path, photos: list[Image.Image], scale: float, rng: np.random.Generator) -> int:
    n_ref = max(10, round(12 * scale))
    n_dist = max(4, round(16 * scale))  # distorted images per folder
    n_copy = max(1, round(4 * scale))  # reference copies per folder (~20% of entries)
    (root / "refimgs").mkdir(parents=True, exist_ok=True)
    refs = []
    for i, name in enumerate(_names(LIVE_REFS, n_ref)):
        img = _crop(photos[i % len(photos)], LIVE_SIZES[i % len(LIVE_SIZES)], rng)
        data = dist.encode(img, "BMP")
        (root / "refimgs" / f"{name}.bmp").write_bytes(data)
        refs.append((f"{name}.bmp", img, data))

    # Distorted images cycle through the references, so each has some in every run.
    order = np.concatenate([rng.permutation(n_ref)
                            for _ in range(math.ceil(len(LIVE_TYPES) * n_dist / n_ref))])
    dmos, orgs, refnames = [], [], []
    j = 0
    for folder, weight, distort in LIVE_TYPES:
        (root / folder).mkdir(exist_ok=True)
        strengths = rng.permutation(np.linspace(0.1, 1.0, n_dist))
        entries: list[tuple[int, float | None]] = [
            (int(order[j + k]), float(s)) for k, s in enumerate(strengths)]
        j += n_dist
        entries += [(int(r), None) for r in rng.choice(n_ref, n_copy, replace=n_copy > n_ref)]
        for k, idx in enumerate(rng.permutation(len(entries)), start=1):
            ref, s = entries[idx]
            name, img, data = refs[ref]
            if s is None:  # a copy of the reference, as LIVE lists them among the distorted
                (root / folder / f"img{k}.bmp").write_bytes(data)
                dmos.append(0.0)
            else:
                (root / folder / f"img{k}.bmp").write_bytes(
                    dist.encode(distort(img, s, rng), "BMP"))
                dmos.append(float(np.clip(8 + 84 * weight * s + rng.normal(0, 2.0), 0.5, 100)))
            orgs.append(float(s is None))
            refnames.append(name)

    dmos_a, orgs_a = np.array([dmos]), np.array([orgs])
    distorted = orgs_a == 0
    # The realigned scale is not bounded by 100: the strongest distortions exceed it a little.
    dmos_new = np.where(distorted, 1.18 * dmos_a - 4 + rng.normal(0, 1.0, dmos_a.shape), 0.0)
    dmos_std = np.where(distorted, rng.uniform(5, 15, dmos_a.shape), 0.0)
    cell = np.empty((1, len(refnames)), dtype=object)
    cell[0, :] = refnames
    _mat(root / "dmos.mat", {"dmos": dmos_a, "orgs": orgs_a})
    _mat(root / "dmos_realigned.mat", {"dmos_new": dmos_new, "orgs": orgs_a,
                                       "dmos_std": dmos_std})
    _mat(root / "refnames_all.mat", {"refnames_all": cell})
    return len(dmos)


# --------------------------------------------------------------------------- CSIQ

CSIQ_REFS = [
    "1600", "aerial_city", "sunset_sparrow", "child_swimming", "boston", "bridge",
    "butter_flower", "cactus", "couple", "elk", "family", "fisher", "foxy", "geckos",
    "lady_liberty", "lake", "log_seaside", "monument", "native_american", "redwood", "roping",
    "rushmore", "shroom", "snow_leaves", "sunsetcolor", "swarm", "trolley", "turtle",
    "veggies", "woman",
]
CSIQ_SIZE = 96
# dst_type (the sheet's word), folder, file token, weight, distortion at s = level / 5
CSIQ_TYPES: list[tuple[str, str, str, float, Distort]] = [
    ("noise", "awgn", "AWGN", 0.75, lambda im, s, rng: dist.noise(im, 3 + 40 * s, rng)),
    ("jpeg", "jpeg", "JPEG", 0.90, lambda im, s, rng: dist.jpeg(im, round(50 - 46 * s))),
    ("jpeg 2000", "jpeg2000", "jpeg2000", 0.95, lambda im, s, rng: dist.jp2k(im, 6 * 40 ** s)),
    ("fnoise", "fnoise", "fnoise", 0.60, lambda im, s, rng: dist.pink(im, 4 + 40 * s, rng)),
    ("blur", "blur", "BLUR", 0.95, lambda im, s, rng: dist.blur(im, 0.3 + 3.5 * s)),
    ("contrast", "contrast", "contrast", 0.55,
     lambda im, s, rng: ImageEnhance.Contrast(im).enhance(1 - 0.8 * s)),
]
CSIQ_HEADER = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]


def _csiq(root: Path, photos: list[Image.Image], scale: float, rng: np.random.Generator) -> int:
    from openpyxl import Workbook

    n_ref = max(10, round(10 * scale))
    per_type = int(np.clip(round(100 * scale / (len(CSIQ_TYPES) * n_ref)), 1, 5))  # levels
    (root / "src_imgs").mkdir(parents=True, exist_ok=True)
    for _, folder, *_ in CSIQ_TYPES:
        (root / "dst_imgs" / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, ref in enumerate(_names(CSIQ_REFS, n_ref)):
        img = _crop(photos[i % len(photos)], CSIQ_SIZE, rng)
        img.save(root / "src_imgs" / f"{ref}.png")
        for t, (dst_type, folder, token, weight, distort) in enumerate(CSIQ_TYPES, start=1):
            for level in sorted(rng.choice(np.arange(1, 6), per_type, replace=False).tolist()):
                s = level / 5
                distort(img, s, rng).save(root / "dst_imgs" / folder / f"{ref}.{token}.{level}.png")
                dmos = float(np.clip(0.9 * weight * s + rng.normal(0, 0.02), 0.0, 1.0))
                image = int(ref) if ref.isdigit() else ref  # Excel keeps '1600' as a number
                rows.append([image, t, dst_type, level, _r(rng.uniform(0.03, 0.2)), _r(dmos)])

    wb = Workbook()
    by_dist = wb.active
    by_dist.title = "all_by_distortion"  # first, so a reader must pick its sheet by name
    by_image = wb.create_sheet("all_by_image")
    for ws, key in ((by_dist, lambda r: (r[1], r[3], str(r[0]))),
                    (by_image, lambda r: (str(r[0]), r[1], r[3]))):
        ws.append(["CSIQ DMOS scores"])
        ws.append([])
        ws.append(["sorted by " + ("distortion" if ws is by_dist else "image")])
        ws.append(CSIQ_HEADER)
        for row in sorted(rows, key=key):
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    (root / "csiq.DMOS.xlsx").write_bytes(_reproducible_zip(buf.getvalue()))
    return len(rows)


# --------------------------------------------------------------------------- BID

BID_SIZES = [(128, 96), (96, 128), (120, 90), (90, 120), (112, 112)]
BID_GRADES = 5


def _bid(root: Path, photos: list[Image.Image], scale: float, rng: np.random.Generator) -> int:
    import xlwt

    n = max(30, round(100 * scale))
    gaps = set(rng.choice(np.arange(2, n + 3), 3, replace=False).tolist())
    numbers = [k for k in range(1, n + 4) if k not in gaps]
    (root / "ImageDatabase").mkdir(parents=True, exist_ok=True)
    wb = xlwt.Workbook()
    ws = wb.add_sheet("Plan1")
    header = ["Image Number", "Average Subjective Grade", "Number of Grades",
              *[f"Grade #{g}" for g in range(1, BID_GRADES + 1)]]
    for c, h in enumerate(header):
        ws.write(0, c, h)
    for i, number in enumerate(numbers):
        blur, noise, comp = (float(v) for v in rng.uniform(0, 1, 3))
        img = _crop(photos[int(rng.integers(len(photos)))], BID_SIZES[i % len(BID_SIZES)], rng)
        img = dist.authentic(img, blur, noise, rng)
        img.save(root / "ImageDatabase" / f"DatabaseImage{number:04d}.JPG",
                 quality=dist.jpeg_quality(comp))
        # BID's raters: blur is what they punish most.
        true = 4.6 - 3.2 * blur - 0.3 * noise - 0.5 * comp + rng.normal(0, 0.12)
        grades = np.clip(np.rint(rng.normal(true, 0.45, BID_GRADES)), 0, 5).astype(int)
        for c, v in enumerate([number, _r(grades.mean()), BID_GRADES, *grades.tolist()]):
            ws.write(i + 1, c, v)
    buf = io.BytesIO()
    wb.save(buf)
    (root / "DatabaseGrades.xls").write_bytes(buf.getvalue())
    return len(numbers)


# --------------------------------------------------------------------------- LIVE Challenge

CLIVE_SIZE = 96
CLIVE_TRAINING = 7


def _clive(root: Path, photos: list[Image.Image], scale: float, rng: np.random.Generator) -> int:
    n = max(30, round(100 * scale))
    images = root / "Images"
    (images / "trainingImages").mkdir(parents=True, exist_ok=True)
    (root / "Data").mkdir(parents=True, exist_ok=True)
    numbers = rng.choice(np.arange(3, 3 + max(1200, 2 * n)), n - CLIVE_TRAINING, replace=False)
    names = [f"t{k}.bmp" for k in range(1, CLIVE_TRAINING + 1)]
    names += [f"{int(num)}.{'JPG' if k % 4 == 0 else 'bmp'}" for k, num in enumerate(numbers)]
    mos, std = [], []
    for i, name in enumerate(names):
        blur, noise, comp = (float(v) for v in rng.uniform(0, 1, 3))
        img = _crop(photos[int(rng.integers(len(photos)))], CLIVE_SIZE, rng)
        img = dist.authentic(img, blur, noise, rng)
        path = (images / "trainingImages" if i < CLIVE_TRAINING else images) / name
        if name.endswith(".JPG"):
            img.save(path, format="JPEG", quality=dist.jpeg_quality(comp))
        else:  # a phone's JPEG, stored as BMP by the database's authors
            dist.jpeg(img, dist.jpeg_quality(comp)).save(path, format="BMP")
        # CLIVE's crowd: noise is what it punishes most.
        mos.append(float(np.clip(82 - 14 * blur - 46 * noise - 12 * comp + rng.normal(0, 2.0),
                                 0, 100)))
        std.append(float(rng.uniform(8, 22)))
    cell = np.empty((n, 1), dtype=object)
    cell[:, 0] = names
    _mat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    _mat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    _mat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.array([std])})
    return n


# --------------------------------------------------------------------------- KonIQ-10k

KONIQ_SIZE = (128, 96)
KONIQ_SCORES = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD",
                "MOS_zscore"]
KONIQ_SETS = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]


def _koniq(root: Path, photos: list[Image.Image], scale: float, rng: np.random.Generator) -> int:
    n = max(30, round(100 * scale))
    (root / "1024x768").mkdir(parents=True, exist_ok=True)
    ids: set[int] = set()
    while len(ids) < n:
        digits = int(rng.integers(9, 12))  # 9- to 11-digit Flickr ids
        ids.add(int(rng.integers(10 ** (digits - 1), 10 ** digits)))
    names = sorted(f"{i}.jpg" for i in ids)  # the real files list them sorted by name
    n_train, n_val = round(0.7 * n), round(0.1 * n)
    sets = np.array(["training"] * n_train + ["validation"] * n_val
                    + ["test"] * (n - n_train - n_val))[rng.permutation(n)]
    scores, split = [], []
    for name, subset in zip(names, sets, strict=True):
        blur, noise, comp = (float(v) for v in rng.uniform(0, 1, 3))
        img = _crop(photos[int(rng.integers(len(photos)))], KONIQ_SIZE, rng)
        dist.authentic(img, blur, noise, rng).save(root / "1024x768" / name, format="JPEG",
                                                   quality=dist.jpeg_quality(comp))
        # KonIQ's crowd: compression first, then blur; noise matters little.
        true = 4.3 - 1.0 * blur - 0.4 * noise - 1.8 * comp + rng.normal(0, 0.06)
        votes = np.clip(np.rint(rng.normal(true, 0.6, int(rng.integers(100, 141)))), 1, 5)
        counts = np.bincount(votes.astype(int), minlength=6)[1:].tolist()
        mos, sd = float(votes.mean()), float(votes.std(ddof=1))
        mos_z = float(np.clip(25 * (mos - 1) + rng.normal(0, 0.8), 0, 100))  # 0..100 scale
        scores.append([name, *counts, len(votes), _r(mos), _r(sd), _r(mos_z)])
        split.append([name, *counts, len(votes), _r(mos_z), _r(sd), str(subset)])
    for file, header, rows, quote in (
            ("koniq10k_scores_and_distributions.csv", KONIQ_SCORES, scores, True),
            ("koniq10k_distributions_sets.csv", KONIQ_SETS, split, False)):
        with open(root / file, "w", newline="") as fh:
            csv.writer(fh, lineterminator="\n",
                       quoting=csv.QUOTE_ALL if quote else csv.QUOTE_MINIMAL).writerow(header)
            csv.writer(fh, lineterminator="\n").writerows(rows)
    return n


# --------------------------------------------------------------------------- KADID-10k

KADID_SIZE = (128, 96)
# KADID's own numbering of its 25 types; a handful of the simple ones, weight, distortion
KADID_TYPES: dict[int, tuple[str, float, Distort]] = {
    1: ("gaussian blur", 1.00, lambda im, s, rng: dist.blur(im, 0.3 + 3.5 * s)),
    7: ("colour saturation", 0.35, lambda im, s, rng: ImageEnhance.Color(im).enhance(1 - s)),
    10: ("jpeg", 0.85, lambda im, s, rng: dist.jpeg(im, round(50 - 46 * s))),
    11: ("white noise", 0.80, lambda im, s, rng: dist.noise(im, 3 + 40 * s, rng)),
    16: ("brighten", 0.45, lambda im, s, rng: ImageEnhance.Brightness(im).enhance(1 + 0.8 * s)),
    17: ("darken", 0.60, lambda im, s, rng: ImageEnhance.Brightness(im).enhance(1 - 0.7 * s)),
    21: ("pixelate", 0.90, lambda im, s, rng: dist.pixelate(im, 1 + 7 * s)),
    25: ("contrast change", 0.55,
         lambda im, s, rng: ImageEnhance.Contrast(im).enhance(1 - 0.7 * s)),
}


def _kadid(root: Path, photos: list[Image.Image], scale: float, rng: np.random.Generator) -> int:
    n_ref = max(10, round(10 * scale))
    per_type = int(np.clip(round(100 * scale / (len(KADID_TYPES) * n_ref)), 1, 5))  # levels
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(1, n_ref + 1):
        ref = f"I{r:02d}.png"
        img = _crop(photos[(r - 1) % len(photos)], KADID_SIZE, rng)
        img.save(images / ref)
        for number, (_, weight, distort) in KADID_TYPES.items():
            for level in sorted(rng.choice(np.arange(1, 6), per_type, replace=False).tolist()):
                s = level / 5
                name = f"I{r:02d}_{number:02d}_{level:02d}.png"
                distort(img, s, rng).save(images / name)
                dmos = float(np.clip(4.75 - 3.6 * weight * s + rng.normal(0, 0.08), 1, 5))
                rows.append([name, ref, round(dmos, 2), round(float(rng.uniform(0.1, 1.0)), 3)])
    with open(root / "dmos.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["dist_img", "ref_img", "dmos", "var"])
        writer.writerows(sorted(rows))
    return len(rows)


# --------------------------------------------------------------------------- entry point

def _clear(out: Path) -> None:
    """Remove an earlier demo under `out`; refuse to write over anything else."""
    marker = out / ".complete"
    ours = marker.is_file() and marker.read_text().startswith(MARKER)
    for folder in FOLDERS:
        d = out / folder
        if d.exists() and any(d.iterdir()):
            if not ours:
                raise FileExistsError(
                    f"{d} exists and is not a finished BIQA demo; delete it to rebuild the demo")
            shutil.rmtree(d)
    marker.unlink(missing_ok=True)


def make_biqa_demo(out: str | Path, *, scale: float = 1.0, seed: int = 0) -> dict[str, int]:
    """Write small stand-ins of the six continual-BIQA datasets under `out`, each in the
    layout and file formats of its real download; returns image counts per dataset folder.

    The counts are labelled images, i.e. rows of each label file (LIVE's include its
    reference copies; references of CSIQ / KADID / LIVE are not counted). `scale`
    multiplies them (about 100 per dataset at 1.0), down to a floor of 10 references
    (LIVE, CSIQ, KADID) or 30 images (BID, CLIVE, KonIQ). `out/.complete` is written last.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    photos = [_source_image(name).convert("RGB") for name, _ in SOURCES]
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(FOLDERS))]
    writers = (_live, _csiq, _bid, _clive, _koniq, _kadid)
    counts = {folder: write(out / folder, photos, scale, rng)
              for folder, write, rng in zip(FOLDERS, writers, rngs, strict=True)}
    (out / ".complete").write_text(
        f"{MARKER} seed={seed} scale={scale} "
        + " ".join(f"{k}={v}" for k, v in counts.items()) + "\n")
    return counts
