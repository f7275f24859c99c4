"""Pure unit discovery over hand-built listings (no filesystem)."""

from __future__ import annotations

from kresume.formats.listing import Entry
from kresume.formats.units import Rules, find_units, resolve_link


def L(*specs):
    """Build a listing: "a/b" files, "a/" dirs, "x -> target" links; parents are added."""
    out = {}
    for s in specs:
        if " -> " in s:
            rel, target = s.split(" -> ")
            out[rel] = Entry(rel, "link", target=target)
        elif s.endswith("/"):
            out[s[:-1]] = Entry(s[:-1], "dir")
        else:
            out[s] = Entry(s, "file", size=10, mtime_ns=1)
        parts = s.split(" -> ")[0].rstrip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            out.setdefault(d, Entry(d, "dir"))
    return out


def shape(d):
    return sorted((u.rel, u.format) for u in d.units)


def test_lightning_single_files_and_link_alias():
    d = find_units(L("lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt",
                     "lightning_logs/version_0/checkpoints/last.ckpt -> epoch=0-step=10.ckpt",
                     "lightning_logs/version_0/hparams.yaml"))
    assert shape(d) == [("lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt", "torch")]
    (a,) = d.aliases
    assert a.resolved == "lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt" and not a.outside
    assert "lightning_logs/version_0/hparams.yaml" in d.ignored


def test_hf_dcp_deepspeed_marker_folders():
    d = find_units(L(
        "out/checkpoint-10/config.json", "out/checkpoint-10/model.safetensors",
        "out/checkpoint-20/",  # just created, empty: still an HF unit (incomplete)
        "dcp/step_5/__0_0.distcp", "dcp/step_5/.metadata",
        "ds/latest", "ds/zero_to_fp32.py", "ds/global_step3/mp_rank_00_model_states.pt",
        "ds/global_step3/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "custom/run1/.kresume-complete", "custom/run1/weights.npy",
        "pl_ds/epoch=0-step=4.ckpt/latest", "pl_ds/epoch=0-step=4.ckpt/checkpoint/mp_rank_00_model_states.pt",
        "w/model.safetensors", "w/notes.txt",
    ))
    assert shape(d) == [
        ("custom/run1", "marker"), ("dcp/step_5", "dcp"), ("ds/global_step3", "deepspeed"),
        ("out/checkpoint-10", "hf"), ("out/checkpoint-20", "hf"),
        ("pl_ds/epoch=0-step=4.ckpt", "deepspeed"), ("w/model.safetensors", "safetensors"),
    ]
    by = {u.rel: u for u in d.units}
    assert by["ds/global_step3"].latest_rel == "ds/latest"
    assert by["pl_ds/epoch=0-step=4.ckpt"].latest_rel == "pl_ds/epoch=0-step=4.ckpt/latest"
    # files inside a claimed folder are never units of their own
    assert not any(u.rel.startswith("out/checkpoint-10/") for u in d.units)
    assert by["out/checkpoint-10"].total_bytes == 20


def test_dcp_folder_is_recognised_before_metadata_exists():
    d = find_units(L("step_7/__0_0.distcp", "step_7/__1_0.distcp"))
    assert shape(d) == [("step_7", "dcp")]


def test_temp_names_are_ignored():
    d = find_units(L("a.ckpt.tmp", ".tmpab12cd", "x.partial", "b.ckpt~", "good.pt"))
    assert shape(d) == [("good.pt", "torch")]


def test_include_exclude_globs():
    listing = L("a/epoch=1.ckpt", "a/last.ckpt", "b/data.npz", "b/other.bin")
    assert shape(find_units(listing, Rules(exclude=("last.ckpt",)))) == [
        ("a/epoch=1.ckpt", "torch"), ("b/other.bin", "torch")]
    assert shape(find_units(listing, Rules(include=("*.npz",)))) == [("b/data.npz", "unknown")]
    assert shape(find_units(listing, Rules(include=("a/*",), exclude=("*last*",)))) == [("a/epoch=1.ckpt", "torch")]


def test_custom_marker_name():
    d = find_units(L("run/DONE", "run/w.npy"), Rules(marker="DONE"))
    assert shape(d) == [("run", "marker")]


def test_links_outside_the_root_are_flagged_never_units():
    d = find_units(L("last.ckpt -> ../../etc/passwd", "creds.ckpt -> /root/.aws/credentials",
                     "checkpoint-5 -> /etc", "ok.ckpt -> sub/e.ckpt", "sub/e.ckpt"))
    assert shape(d) == [("sub/e.ckpt", "torch")]
    al = {a.rel: a for a in d.aliases}
    assert al["last.ckpt"].outside and al["creds.ckpt"].outside and al["checkpoint-5"].outside
    assert al["ok.ckpt"].resolved == "sub/e.ckpt"


def test_resolve_link_rules():
    assert resolve_link("a/b/last.ckpt", "e.ckpt") == "a/b/e.ckpt"
    assert resolve_link("a/last.ckpt", "../e.ckpt") == "e.ckpt"
    assert resolve_link("last.ckpt", "../e.ckpt") is None
    assert resolve_link("last.ckpt", "/abs") is None
    assert resolve_link("last.ckpt", ".") is None


def test_fingerprint_changes_on_rewrite():
    a = find_units(L("x.ckpt")).units[0]
    b = find_units({"x.ckpt": Entry("x.ckpt", "file", size=10, mtime_ns=2)}).units[0]
    assert a.fingerprint != b.fingerprint
