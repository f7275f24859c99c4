"""``python -m bench``: kresume against the fastest peers, one run, one table.

    python -m bench                      # full sizes (1 GB file, 64 x 16 MB folder, 4 GB memory row)
    python -m bench --quick              # tiny sizes, 1 round (the CI smoke run)
    python -m bench --only upload,memory --servers seaweedfs --repeats 5
    python -m bench --write bench/RESULTS.md

Rows (``--only``): ``transfer`` (upload + restore of the file and the folder, and ``cp``),
``clients`` (native obstore client vs the fsspec backends: commit, restore, one-shot ``latest`` and
the in-process lookup on SeaweedFS, Azurite and fake-gcs-server; ``--client-servers``),
``durable`` (sidecar time to durable minus pure upload), ``memory`` (peak RSS), ``training``
(steps/s with and without a sidecar), ``webhook`` (operator's bench/webhook_latency.py when present).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import inputs, machine, peers, procs, report, servers, transfer_rows

ROWS = ("transfer", "clients", "durable", "memory", "training", "webhook")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny inputs and 1 round (smoke run; numbers meaningless)")
    p.add_argument("--only", default=",".join(ROWS), help=f"comma-separated rows out of {', '.join(ROWS)}")
    p.add_argument("--servers", default="seaweedfs,rclone", help="comma-separated: seaweedfs, rclone")
    p.add_argument("--client-servers", default="seaweedfs,azurite,fake-gcs",
                   help="servers of the clients row: seaweedfs, azurite, fake-gcs")
    p.add_argument("--client-file-mb", type=int, default=None,
                   help="file size of the clients row, MB (default 1000; 8 with --quick)")
    p.add_argument("--tools", default=",".join((*peers.PEERS, "cp")), help="transfer tools to compare")
    p.add_argument("--inputs", default="file,folder", help="transfer inputs: file (one big file), folder (shards)")
    p.add_argument("--direction", default=",".join(transfer_rows.DIRECTIONS),
                   help="transfer directions: upload, restore (restore-only still uploads once per tool)")
    p.add_argument("--repeats", type=int, default=None, help="rounds per measurement (default 5; 1 with --quick)")
    p.add_argument("--workdir", default=None, help="where inputs and downloads go (default: a temp folder, removed)")
    p.add_argument("--write", default=None, metavar="PATH", help="also write the report (markdown) to PATH")
    args = p.parse_args(argv)
    args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = set(args.only) - set(ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.inputs = [i.strip() for i in args.inputs.split(",") if i.strip()]
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.direction = tuple(d.strip() for d in args.direction.split(",") if d.strip())
    if not args.direction or set(args.direction) - set(transfer_rows.DIRECTIONS):
        p.error(f"--direction: choose from {', '.join(transfer_rows.DIRECTIONS)}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    return args


def main(argv: list[str] | None = None) -> str:
    """Run the selected rows and print (and optionally write) the markdown report; return it."""
    args = parse(argv)
    sizes = inputs.QUICK if args.quick else inputs.FULL
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kresume-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    procs.bytecode_as_installed()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    facts = machine.describe(str(work), {t: peers.tool(t) for t in ("s5cmd", "rclone")})
    started = time.monotonic()
    rows: list[report.TransferRow] = []
    metrics: list[report.Metric] = []
    targets: dict[str, servers.Target] = {}
    try:
        for name in args.servers:
            targets[name] = servers.start(name)
            log(f"{name} at {targets[name].server.endpoint}")
        data = work / "inputs"
        if "transfer" in args.only:
            ckpt = inputs.torch_checkpoint(data / "model.ckpt", sizes.file)
            shard_dir = inputs.folder(data / "sharded", sizes.shards, sizes.shard)
            for name, target in targets.items():
                for src, label in ((ckpt, f"file {sizes.file // 10**6} MB"),
                                   (shard_dir, f"folder {sizes.shards} x {sizes.shard // 10**6} MB")):
                    if label.split()[0] not in args.inputs:
                        continue
                    rows += transfer_rows.measure(target, src, label,
                                                  args.tools, args.repeats, work, log, args.direction)
            ckpt.unlink()
            shutil.rmtree(shard_dir)
        if "clients" in args.only:
            from bench import client_rows

            mb = args.client_file_mb or (8 if args.quick else 1000)
            src = inputs.torch_checkpoint(data / "client.ckpt", mb * inputs.MB)
            metrics += client_rows.measure([s.strip() for s in args.client_servers.split(",") if s.strip()],
                                           src, args.repeats, work, log)
            src.unlink()
        first = targets[args.servers[0]] if args.servers else None
        if first is not None and {"durable", "memory"} & set(args.only):
            from bench import sidecar_rows

            metrics += sidecar_rows.measure(first, sizes, args.repeats, work, set(args.only), log)
        if "training" in args.only and first is not None:
            from bench import training_row

            metrics += training_row.measure(first, args.quick, args.repeats, work, log)
        if "webhook" in args.only:
            from bench import webhook_row

            metrics += webhook_row.measure(args.quick, work, log)
    finally:
        for target in targets.values():
            target.server.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    facts["load average at end (1 min)"] = machine.load_now()
    facts["wall time of the run"] = f"{time.monotonic() - started:.0f} s"
    cmd = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n\n".join(filter(None, [
        f"Command: `{cmd.strip()}` — {args.repeats} round(s), tools alternating, medians.",
        "Ratios are kresume's speed ÷ the peer's (≥ 1.00× = kresume as fast or faster); `cp` is the disk ceiling.",
        report.transfer_tables(rows, tuple(dict.fromkeys(("kresume", *args.tools)))) if rows else "",
        report.metric_table(metrics) if metrics else "",
        report.machine_table(facts),
    ]))
    print(text)
    if args.write:
        Path(args.write).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
