"""Pure rules of the store protocol: ids, manifests, resolution order, retention, error mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kresume.store import errors, layout, retention, selection
from kresume.store.manifest import FileEntry, Manifest, ManifestInvalid, Pointer


def _id(step, sec, rand="aaaaaa"):
    return layout.new_checkpoint_id(step, datetime(2026, 1, 1, 0, 0, sec, tzinfo=UTC), rand)


def test_ids_order_by_step_then_commit_start():
    a, b, c, unknown = _id(100, 5), _id(200, 1), _id(200, 2), _id(None, 59)
    assert layout.sort_newest_first([a, unknown, c, b]) == [c, b, a, unknown]


def test_every_commit_gets_a_fresh_id_so_rewrites_get_new_keys():
    ids = {layout.new_checkpoint_id(5) for _ in range(200)}
    assert len(ids) == 200
    assert len({layout.data_key(i, "last.ckpt", None) for i in ids}) == 200


def test_foreign_names_in_manifests_folder_are_ignored():
    good = _id(3, 1)
    assert layout.ids_from_manifest_names([f"b/run/manifests/{good}.json", "b/run/manifests/notes.txt",
                                           "b/run/manifests/hello.json"]) == [good]


def _manifest(cid="0000000001-20260101T000000000000Z-aaaaaa", **kw):
    base = dict(id=cid, name="epoch=0-step=1.ckpt", kind="file", format="lightning", step=1, epoch=0,
                files=(FileEntry("", 10, "0000abcd"),))
    base.update(kw)
    return Manifest(**base)


def test_manifest_round_trip():
    m = _manifest()
    assert Manifest.from_json(m.to_json(), expected_id=m.id) == m


@pytest.mark.parametrize("patch,field", [
    ({"version": 9}, "version"),
    ({"files": []}, "files"),
    ({"files": [{"path": "../x", "size": 1, "crc32c": "0"}], "kind": "dir"}, "files[0].path"),
    ({"files": [{"path": "/etc/passwd", "size": 1, "crc32c": "0"}], "kind": "dir"}, "files[0].path"),
    ({"name": "a/b"}, "name"),
    ({"name": ".."}, "name"),
    ({"kind": "tar"}, "kind"),
    ({"step": "12"}, "step"),
])
def test_malformed_manifest_names_the_field(patch, field):
    import json

    doc = json.loads(_manifest().to_json())
    doc.update(patch)
    with pytest.raises(ManifestInvalid, match=field.replace("[", r"\[").replace("]", r"\]")):
        Manifest.from_json(json.dumps(doc))


def test_manifest_id_must_match_its_key():
    with pytest.raises(ManifestInvalid, match="does not match"):
        Manifest.from_json(_manifest().to_json(), expected_id="0000000002-20260101T000000000000Z-bbbbbb")


def test_pointer_rejects_garbage():
    with pytest.raises(ManifestInvalid):
        Pointer.from_json(b"{not json")


def test_candidates_skip_bad_and_go_newest_first():
    a, b, c = _id(1, 1), _id(2, 1), _id(3, 1)
    assert selection.candidate_order([a, c, b], bad_ids=[c]) == [b, a]


def test_object_problems_reports_missing_and_wrong_size():
    m = _manifest(kind="dir", name="ck", files=(FileEntry("a", 5, "0"), FileEntry("b/c", 7, "0")))
    prefix = f"checkpoints/{m.id}/ck"
    assert selection.object_problems(m, {f"{prefix}/a": 5, f"{prefix}/b/c": 7}) == []
    problems = selection.object_problems(m, {f"{prefix}/a": 4})
    assert any("missing" in p and "b/c" in p for p in problems)
    assert any("has 4 B" in p for p in problems)


def test_prune_keeps_last_n_pointer_protected_and_every_k():
    ids = {_id(s, 1): s for s in (100, 200, 300, 400, 500)}
    by_step = {s: i for i, s in ids.items()}
    plan = retention.plan_prune(ids, keep_last=2, keep_every=200, pointer_id=by_step[100], protect=[by_step[300]])
    assert set(plan.keep) == {by_step[500], by_step[400], by_step[100], by_step[300], by_step[200]} - set()
    plan = retention.plan_prune(ids, keep_last=1)
    assert plan.keep == [by_step[500]]
    assert plan.delete == [by_step[s] for s in (400, 300, 200, 100)]


@pytest.mark.parametrize("bad", [0, -1])
def test_prune_refuses_keep_last_below_one(bad):
    with pytest.raises(ValueError, match="keep_last"):
        retention.plan_prune({}, keep_last=bad)


class _Coded(Exception):
    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.status = status


@pytest.mark.parametrize("exc,kind", [
    (_Coded("An error occurred (NoSuchBucket) when calling the ListObjectsV2 operation"), errors.BucketMissing),
    (PermissionError("Access Denied"), errors.PermissionDenied),
    (type("NoCredentialsError", (Exception,), {})("Unable to locate credentials"), errors.NoCredentials),
    (_Coded("SlowDown: please reduce your request rate", 503), errors.StoreUnreachable),
    (ConnectionResetError("reset"), errors.StoreUnreachable),
    (FileNotFoundError("x"), errors.NotARun),
])
def test_backend_errors_map_to_one_line_store_errors(exc, kind):
    got = errors.translate(exc, "s3://b/run/")
    assert isinstance(got, kind)
    assert str(got).startswith("s3://b/run/: ") and "\n" not in str(got)


def test_transient_classification():
    assert errors.is_transient(_Coded("throttled", 429))
    assert errors.is_transient(_Coded("boom", 503))
    assert not errors.is_transient(_Coded("nope", 404))
    assert not errors.is_transient(PermissionError("no"))
    # s3fs's own mapping: InternalError/500 → EREMOTEIO, SlowDown/503 → EBUSY, message without the code
    import errno

    assert errors.is_transient(OSError(errno.EREMOTEIO, "We encountered an internal error"))
    assert errors.is_transient(OSError(errno.EBUSY, "Please reduce your request rate"))
    assert not errors.is_transient(OSError(errno.EINVAL, "InvalidArgument"))


def test_pointer_moves_forward_only_and_checks_a_newer_target():
    older, newer = _id(100, 1), _id(200, 1)
    assert selection.pointer_decision(None, older) == selection.WRITE
    assert selection.pointer_decision("not-a-kresume-id", older) == selection.WRITE
    assert selection.pointer_decision(older, newer) == selection.WRITE
    assert selection.pointer_decision(newer, newer) == selection.KEEP
    # A newer current target is kept unless the caller finds it missing, invalid or bad-marked.
    assert selection.pointer_decision(newer, older) == selection.CHECK


def test_retention_keeps_live_pins_and_one_verified_fallback():
    by_step = {s: _id(s, 1) for s in (100, 200, 300, 400, 500)}
    steps = {i: s for s, i in by_step.items()}
    plan = retention.plan_prune(steps, keep_last=1, latest_id=by_step[500], verified=[by_step[200]],
                                pinned={by_step[100]: ["trainer-0", "trainer-1"]})
    assert set(plan.keep) == {by_step[500], by_step[200], by_step[100]}
    assert plan.delete == [by_step[400], by_step[300]]  # the verified one wins over the newer unverified
    assert plan.reasons[by_step[200]].startswith("the fallback: newest verified")
    assert plan.reasons[by_step[100]] == "pinned by trainer-0, trainer-1 (a live pod resumed from it)"
    # A verified id newer than latest is not a fallback; bad ones never are.
    plan = retention.plan_prune(steps, keep_last=1, latest_id=by_step[300], bad=[by_step[200]],
                                verified=[by_step[400]])
    assert "fallback: newest valid" in plan.reasons[by_step[100]] and by_step[200] in plan.keep


def test_pin_lease_rule_and_last_modified_forms():
    from kresume.store import clock, pins

    t0 = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    later = datetime(2026, 1, 1, 0, 10, 0, tzinfo=UTC)
    assert pins.is_live(t0, later, 601) and not pins.is_live(t0, later, 600)
    assert pins.is_live(None, later, 1) and pins.is_live(t0, None, 1)  # unknown age protects
    assert clock.modified_at({"LastModified": t0}) == t0
    assert clock.modified_at({"updated": "2026-01-01T00:00:00.000Z"}) == t0
    assert clock.modified_at({"mtime": t0.timestamp()}) == t0
    assert clock.modified_at({"name": "x"}) is None
    assert layout.checkpoint_id_of(f"s3://b/checkpoints/ns/run/checkpoints/{_id(5, 1)}/m.ckpt") == _id(5, 1)
    assert layout.checkpoint_id_of("/data/m.ckpt") is None
