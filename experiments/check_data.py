"""`iqacl check-data`: what a config's stream holds, before anyone starts a long run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from benchmarks.images import unreadable_reason
from benchmarks.stream import ExperienceData, load_experiences


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
                                   val_fraction=data["val_fraction"])
    limit = data["max_dropped_fraction"]
    head = ["experience", "labelled", "usable", "missing", "unreadable", "leakage removed",
            "train", "val", "test", "ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    all_ok = True
    for exp in experiences:
        unreadable = decode_all(exp, workers) if decode else {}
        labelled = len(exp.table) + len(exp.dropped)
        bad = len(exp.dropped) + len(unreadable)
        ok = bad / max(labelled, 1) <= limit
        all_ok &= ok
        c = exp.counts()
        row = [exp.name, labelled, len(exp.table) - len(unreadable), len(exp.dropped),
               len(unreadable) if decode else "not checked (--decode)",
               c["removed_for_leakage"], c["train"], c["val"], c["test"],
               "yes" if ok else f"NO: {bad / labelled:.1%} unusable > {limit:.1%}"]
        lines.append("| " + " | ".join(map(str, row)) + " |")
        for image_id, reason in list(unreadable.items())[:5]:
            lines.append(f"  {exp.name} {image_id}: {reason}")
    return "\n".join(lines), all_ok
