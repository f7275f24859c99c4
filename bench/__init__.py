"""kresume benchmarks against the fastest peers (issue 7): ``python -m bench``.

Every row is measured in one run against peers on the same server, alternating A/B, median of
``--repeats``. Modules: ``machine`` (what ran it), ``procs`` (timed subprocesses with exact peak RSS),
``servers`` (SeaweedFS + ``rclone serve s3``), ``inputs``, ``peers`` (command lines of each tool),
``transfer_rows`` (upload/restore/cp), ``sidecar_rows`` (time to durable, memory), ``training_row``,
``webhook_row``, ``report`` (medians, ratios, the markdown table).
"""
