"""`iqacl check-data`: what a config's stream holds, before anyone starts a long run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from benchmarks.datasets.files import DROP_KINDS, unreadable_reason
from benchmarks.stream import ExperienceData, load_experiences

HEADINGS = {"missing": "missing", "empty": "empty", "outside_root": "outside root",
            "unreadable": "unreadable"}
EXAMPLES = 5  # per-image lines per experience and reason


def decode_all(exp: ExperienceData, workers: int) -> dict[str, str]:
    """Open every usable image (threads: Pillow releases the GIL while decoding)."""
    files = exp.table["file"].tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(unreadable_reason, files), total=len(files),
                            desc=f"decoding {exp.name}", unit="img"))
    return {i: r for i, r in zip(exp.table["image_id"], results, strict=True) if r}


def check_data(config: dict, decode: bool = False, workers: int = 4) -> tuple[str, bool]:
    """A per-experience report and whether every experience is within the drop limit."""
    data = config["data"]
    experiences = load_experiences(config["stream"], seed=config["seed"],
                                   test_fraction=data["test_fraction"],
                                   val_fraction=data["val_fraction"],
                                   val_of=data["val_fraction_of"], split=data["split"],
                                   transform=data["transform"])
    limit = data["max_dropped_fraction"]
    head = ["experience", "labelled", "usable", *HEADINGS.values(), "excluded",
            "leakage removed", "train", "val", "test", "split by", "references (train/val/test)",
            "ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    all_ok = True
    for exp in experiences:
        if decode:
            parts = {i: p for p in ("train", "val", "test") for i in getattr(exp.split, p)}
            exp.add_dropped([(i, "unreadable", r, parts.get(i, ""), "check-data")
                             for i, r in decode_all(exp, workers).items()])
        c = exp.counts()
        by_kind = c["dropped_by_reason"]
        bad = c["dropped"]
        ok = bad / max(c["labelled"], 1) <= limit
        all_ok &= ok
        cells = [by_kind[k] for k in DROP_KINDS]
        if not decode:
            cells[-1] = "not checked (--decode)"
        refs = c["references"]
        row = [exp.name, c["labelled"], c["usable"], *cells, c["excluded"],
               c["removed_for_leakage"], c["train"], c["val"], c["test"], c["split_by"],
               "/".join(str(refs[p]) for p in ("train", "val", "test")) if refs else "—",
               "yes" if ok else f"NO: {bad / c['labelled']:.1%} unusable > {limit:.1%}"]
        lines.append("| " + " | ".join(map(str, row)) + " |")
        if exp.no_val():
            notes.append(f"  {exp.no_val()}")
        for reason, n in c["excluded_by_reason"].items():
            notes.append(f"  {exp.name}: {n} excluded by design ({reason}); not counted as "
                         "dropped")
        if c["references_shared"]:
            notes.append(f"  WARNING {exp.name}: {c['references_shared']} reference image(s) "
                         f"are in more than one split (split by {c['split_by']}): train and "
                         "test share content, which flatters the test scores; use split_by: "
                         "reference")
        for kind in DROP_KINDS:
            rows = exp.dropped[exp.dropped["kind"] == kind]
            for image_id, reason in zip(rows["image_id"][:EXAMPLES], rows["reason"][:EXAMPLES],
                                        strict=True):
                notes.append(f"  {exp.name} {image_id}: {reason}")
            if len(rows) > EXAMPLES:
                notes.append(f"  {exp.name}: {len(rows) - EXAMPLES} more {HEADINGS[kind]}")
        if exp.official_unlabelled:
            few = ", ".join(exp.official_unlabelled[:EXAMPLES])
            more = ", ..." if len(exp.official_unlabelled) > EXAMPLES else ""
            notes.append(f"  {exp.name}: {len(exp.official_unlabelled)} id(s) of the official "
                         f"test list are not in the label file and are not used ({few}{more})")
    return "\n".join(lines + notes), all_ok
