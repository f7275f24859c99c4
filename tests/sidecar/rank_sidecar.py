"""Run the real sidecar (``kresume.sidecar.cli``) with one test-only fault or synchronisation patched in.

    python rank_sidecar.py --die-at-commit -- <sidecar flags>
    python rank_sidecar.py --barrier DIR --rank R --world W -- <sidecar flags>

``--die-at-commit``: the process SIGKILLs itself the moment it would first try a multi-rank commit, i.e.
right after writing its part record (``partcommit.try_commit``): a committer killed between its part and the
commit, as by a node loss.

``--barrier DIR``: every part-record and manifest write of a multi-rank checkpoint waits until every rank has
reached the same write for the same id (files in ``DIR``, spun on in a tight loop), so the ranks' writes
leave within microseconds of each other; ``DIR/<id>.<what>.<rank>`` holds the release time (``time_ns``).
A rank that never reaches the manifest write (it saw too few parts) releases the others after 2 s.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _die(*_a: object, **_k: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _barrier(folder: str, rank: int, world: int):  # noqa: ANN202
    from kresume.store import conditional, layout

    original = conditional.create_if_absent

    def create_if_absent(fs, path, data, *a, **k):  # noqa: ANN001, ANN202
        parts = str(path).split("/")
        what = "part" if len(parts) > 3 and parts[-3] == "parts" else \
            "manifest" if len(parts) > 2 and parts[-2] == "manifests" else None
        cid = (parts[-2] if what == "part" else parts[-1].removesuffix(".json")) if what else ""
        key = layout.parse_checkpoint_id(cid)
        if what is not None and key is not None and key.multi_rank:
            mine = os.path.join(folder, f"{cid}.{what}.{rank}")
            with open(mine + ".tmp", "w") as f:
                f.write("")
            os.replace(mine + ".tmp", mine)
            others = [os.path.join(folder, f"{cid}.{what}.{r}") for r in range(world) if r != rank]
            end = time.monotonic() + (60.0 if what == "part" else 2.0)
            while not all(os.path.exists(o) for o in others) and time.monotonic() < end:
                time.sleep(0.0001)
            with open(mine, "w") as f:
                f.write(str(time.time_ns()))
        return original(fs, path, data, *a, **k)

    conditional.create_if_absent = create_if_absent


def main() -> None:
    argv = sys.argv[1:]
    cut = argv.index("--")
    opts, sidecar_args = argv[:cut], argv[cut + 1:]
    if "--die-at-commit" in opts:
        from kresume.store import partcommit

        partcommit.try_commit = _die  # type: ignore[assignment]
    if "--barrier" in opts:
        _barrier(opts[opts.index("--barrier") + 1], int(opts[opts.index("--rank") + 1]),
                 int(opts[opts.index("--world") + 1]))
    from kresume.sidecar import cli

    sys.argv = ["kresume-sidecar", *sidecar_args]
    cli.main()


if __name__ == "__main__":
    main()
