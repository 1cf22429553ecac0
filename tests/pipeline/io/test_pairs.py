"""Pair discovery: manifests, two folders, suffix patterns; locally and on a real S3 server."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest
from factories import SHARED_DATASETS, make_folder_pairs, upload_tree, write_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import schema as S
from pipeline.config.io_config import PairsConfig
from pipeline.errors import ManifestError, OutputKeyError, PairDiscoveryError
from pipeline.io.pairs import PAIR_SCHEMA, check_pair_source, iter_pairs, read_pairs, sanitize_pair_id


def collect(source: str, **kwargs) -> tuple[list[dict], list[dict]]:
    pairs, failures = [], []
    for batch in iter_pairs(source, **kwargs):
        assert batch.pairs.schema.equals(PAIR_SCHEMA) and batch.failures.schema.equals(PAIR_SCHEMA)
        pairs += batch.pairs.to_pylist()
        failures += batch.failures.to_pylist()
    return pairs, failures


@pytest.fixture(params=["local", "s3"])
def where(request):
    """Run a test against a local folder and against the same files uploaded to the S3 server."""
    if request.param == "local":
        return lambda local, _prefix="": str(local)
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return lambda local, prefix="data": upload_tree(endpoint, local, bucket, prefix)


# ------------------------------------------------------------------------------------------------------------
# Manifests
# ------------------------------------------------------------------------------------------------------------

MANIFEST_ROWS = [
    {"pair_id": "p1", "uri_a": "vi/1.png", "uri_b": "ir/1.png", "task": "vif"},
    {"pair_id": "p2", "uri_a": "./vi/2.png", "uri_b": "ir/2.png", "task": None},
    {"pair_id": "p3", "uri_a": "/abs/a.tif", "uri_b": "s3://other/b.tif", "task": "pansharpen"},
]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifest_formats_resolve_relative_uris(tmp_path: Path, where, fmt: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    write_manifest(folder / f"pairs.{fmt}", MANIFEST_ROWS)
    base = where(folder)
    pairs, failures = collect(f"{base}/pairs.{fmt}", task="medical")
    assert failures == []
    assert [p[S.PAIR_ID] for p in pairs] == ["p1", "p2", "p3"]
    assert pairs[0][S.URI_A] == f"{base}/vi/1.png" and pairs[0][S.URI_B] == f"{base}/ir/1.png"
    assert pairs[1][S.URI_A] == f"{base}/vi/2.png"
    assert pairs[2][S.URI_A] == "/abs/a.tif" and pairs[2][S.URI_B] == "s3://other/b.tif"
    # a row's own task wins; rows without one take the argument
    assert [p[S.TASK] for p in pairs] == ["vif", "medical", "pansharpen"]
    assert {p[S.STATUS] for p in pairs} == {S.STATUS_OK}


def test_manifest_ids_stay_strings_and_default_task(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.csv", [{"pair_id": "007", "uri_a": "a.png", "uri_b": "b.png"}])
    pairs, _ = collect(str(path))
    assert pairs[0][S.PAIR_ID] == "007"  # not parsed as the integer 7
    assert pairs[0][S.TASK] == "general"
    assert pairs[0][S.URI_A] == str(tmp_path / "a.png")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifest_bad_rows_become_failures(tmp_path: Path, fmt: str) -> None:
    rows = [
        {"pair_id": "ok", "uri_a": "a.png", "uri_b": "b.png", "task": "vif"},
        {"pair_id": "nob", "uri_a": "a.png", "uri_b": "", "task": "vif"},
        {"pair_id": "ok", "uri_a": "c.png", "uri_b": "d.png", "task": "vif"},
        {"pair_id": "weird", "uri_a": "a.png", "uri_b": "b.png", "task": "sharpen"},
        {"pair_id": "  ", "uri_a": "a.png", "uri_b": "b.png", "task": "vif"},
        {"pair_id": "../escape", "uri_a": "a.png", "uri_b": "b.png", "task": "vif"},
    ]
    path = write_manifest(tmp_path / f"m.{fmt}", rows)
    pairs, failures = collect(str(path))
    assert [p[S.PAIR_ID] for p in pairs] == ["ok", sanitize_pair_id("../escape")]
    assert pairs[0][S.URI_A].endswith("a.png")  # the first "ok" is kept
    reasons = {f[S.PAIR_ID]: f[S.ERROR] for f in failures}
    assert set(reasons) == {"nob", "ok", "weird", "  "}
    assert "missing partner" in reasons["nob"] and "uri_b" in reasons["nob"]
    assert "duplicate pair_id" in reasons["ok"]
    assert "unknown task 'sharpen'" in reasons["weird"]
    assert "empty" in reasons["  "]
    assert {f[S.STATUS] for f in failures} == {S.STATUS_FAILED}
    assert {f[S.ERROR_STAGE] for f in failures} == {S.STAGE_DISCOVER}


def test_duplicates_detected_across_batches(tmp_path: Path) -> None:
    rows = [{"pair_id": f"id{i % 7}", "uri_a": f"a{i}.png", "uri_b": f"b{i}.png"} for i in range(30)]
    path = write_manifest(tmp_path / "m.parquet", rows)
    batches = list(iter_pairs(str(path), config=PairsConfig(batch_size=4)))
    assert len(batches) > 3
    assert all(b.pairs.num_rows + b.failures.num_rows <= 4 for b in batches)
    ids = [r for b in batches for r in b.pairs[S.PAIR_ID].to_pylist()]
    assert sorted(ids) == [f"id{i}" for i in range(7)]
    assert sum(b.failures.num_rows for b in batches) == 23


def test_jsonl_malformed_line_is_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"pair_id": "a", "uri_a": "x.png", "uri_b": "y.png"}\n{not json\n[1, 2]\n')
    pairs, failures = collect(str(path))
    assert [p[S.PAIR_ID] for p in pairs] == ["a"]
    assert [f[S.PAIR_ID] for f in failures] == ["line-2", "line-3"]


def test_manifest_missing_columns_or_file_raise(tmp_path: Path, s3_server: str, s3_bucket: str) -> None:
    path = write_manifest(tmp_path / "m.csv", [{"id": "a", "uri_a": "x", "uri_b": "y"}])
    with pytest.raises(PairDiscoveryError, match=r"lacks column\(s\) \['pair_id'\]"):
        collect(str(path))
    with pytest.raises(PairDiscoveryError, match="nope.csv"):
        collect(str(tmp_path / "nope.csv"))
    with pytest.raises(PairDiscoveryError, match="nope.parquet"):
        collect(f"s3://{s3_bucket}/nope.parquet")


def test_csv_malformed_rows_fail_alone_naming_their_line(tmp_path: Path) -> None:
    """Wrong field counts, an empty id, invalid UTF-8 and a quoted newline: each bad row is one failure naming the
    manifest and its line (and its URIs where it has them); the 20 good rows around them all proceed."""
    good = [f"g{i:02d},a{i}.png,b{i}.png" for i in range(20)]
    lines = [
        b"pair_id,uri_a,uri_b",
        *[g.encode() for g in good[:5]],
        b"two,fields",  # line 7
        b"four,a.png,b.png,extra",  # line 8
        *[g.encode() for g in good[5:10]],
        b",ea.png,eb.png",  # line 14: empty id
        b'"quoted\nid",qa.png,qb.png',  # lines 15-16: one record over two lines, a valid (sanitised) id
        b"bad\xff\xfeutf8,u.png,v.png",  # line 17
        b"",  # blank lines are skipped
        *[g.encode() for g in good[10:]],
    ]
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    pairs, failures = collect(str(path), config=PairsConfig(batch_size=6))
    assert [p[S.PAIR_ID] for p in pairs] == [f"g{i:02d}" for i in range(10)] + [sanitize_pair_id("quoted\nid")] + [
        f"g{i:02d}" for i in range(10, 20)
    ]
    reasons = {f[S.PAIR_ID]: f[S.ERROR] for f in failures}
    assert set(reasons) == {"line-7", "line-8", "", "line-17"}
    assert reasons["line-7"].startswith(f"manifest {path} line 7: expected 3 fields")
    assert "got 2" in reasons["line-7"] and "two,fields" in reasons["line-7"]
    assert reasons["line-8"].startswith(f"manifest {path} line 8: expected 3 fields") and "got 4" in reasons["line-8"]
    assert reasons[""].startswith(f"manifest {path} line 14 (uri_a {tmp_path / 'ea.png'}, uri_b {tmp_path / 'eb.png'})")
    assert "empty" in reasons[""]
    assert reasons["line-17"].startswith(f"manifest {path} line 17: not valid UTF-8") and "\\xff" in reasons["line-17"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_ids_are_text_never_null(tmp_path: Path, fmt: str) -> None:
    """The CSV reader's null literals are ids like any other; only an empty id is missing, and its failure names
    the manifest row and its URIs."""
    ids = ["NA", "null", "nan", "None", "N/A", "NULL", "#N/A", "-nan", "1.0", "007"]
    rows = [{"pair_id": i, "uri_a": f"a{n}.png", "uri_b": f"b{n}.png"} for n, i in enumerate(ids)]
    rows.append({"pair_id": "", "uri_a": "ea.png", "uri_b": "eb.png"})
    path = write_manifest(tmp_path / f"m.{fmt}", rows)
    pairs, failures = collect(str(path))
    assert sorted(p[S.PAIR_ID] for p in pairs) == sorted(sanitize_pair_id(i) for i in ids)
    assert {sanitize_pair_id(i) for i in ids} >= {"NA", "null", "nan", "None", "NULL", "1.0", "007"}
    assert len(failures) == 1
    unit = "row" if fmt == "parquet" else "line"
    number = 11 if fmt == "parquet" else (12 if fmt == "csv" else 11)
    assert failures[0][S.ERROR].startswith(f"manifest {path} {unit} {number} (uri_a {tmp_path / 'ea.png'}")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("dup.csv", b"pair_id,uri_a,uri_b,pair_id\np,a.png,b.png,q\n", "repeats column"),
        ("cols.csv", b"id,uri_a,uri_b\np,a.png,b.png\n", r"lacks column\(s\) \['pair_id'\]"),
        ("u16.csv", "pair_id,uri_a,uri_b\np,a.png,b.png\n".encode("utf-16"), "UTF-16 text: expected UTF-8"),
        ("u16le.csv", "pair_id,uri_a,uri_b\np,a.png,b.png\n".encode("utf-16-le"), "header is not UTF-8"),
        ("junk.csv", bytes(range(256)) * 4, "not UTF-8|lacks column"),
        ("empty.csv", b"", "is empty"),
        ("blank.csv", b"\n\n", "is empty"),
        ("header.csv", b"pair_id,uri_a,uri_b,task\n", "no data rows"),
        ("header.jsonl", b"\n", "no data rows"),
        ("u16.jsonl", '{"pair_id": "p"}\n'.encode("utf-16"), "UTF-16 text"),
        ("cols.jsonl", b'{"id": "p", "uri_a": "a", "uri_b": "b"}\n', "lacks column"),
        ("junk.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ],
)
def test_manifest_unusable_as_a_whole_is_a_manifest_error(tmp_path: Path, name: str, content: bytes, reason: str):
    """One clear error naming the manifest (exit 2 in the job), found by the cheap pre-flight check too."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=reason) as raised:
        collect(str(path))
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ManifestError, match=reason):
        check_pair_source(str(path))


def test_zero_row_parquet_and_duplicate_parquet_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({c: pa.array([], pa.string()) for c in ("pair_id", "uri_a", "uri_b")}), empty)
    with pytest.raises(ManifestError, match="no data rows"):
        check_pair_source(str(empty))
    dup = tmp_path / "dup.parquet"
    columns = [pa.array(["p"]), pa.array(["a.png"]), pa.array(["b.png"]), pa.array(["q"])]
    pq.write_table(pa.Table.from_arrays(columns, names=["pair_id", "uri_a", "uri_b", "uri_a"]), dup)
    with pytest.raises(ManifestError, match=r"repeats column\(s\) \['uri_a'\]"):
        collect(str(dup))


def test_check_pair_source_is_cheap_and_names_the_layout(tmp_path: Path) -> None:
    rows = [{"pair_id": f"p{i}", "uri_a": "a.png", "uri_b": "b.png"} for i in range(3000)]
    path = write_manifest(tmp_path / "m.csv", rows)
    assert check_pair_source(str(path)) == "manifest"
    make_folder_pairs(tmp_path / "src", "vi", "ir", ["1.png"], ["1.png"])
    assert check_pair_source(str(tmp_path / "src")) == "folders"
    with pytest.raises(PairDiscoveryError, match="neither a manifest"):
        check_pair_source(str(tmp_path / "nothing"))


# ------------------------------------------------------------------------------------------------------------
# Folders and suffixes
# ------------------------------------------------------------------------------------------------------------


def test_folders_match_stems_case_insensitively(tmp_path: Path, where) -> None:
    make_folder_pairs(
        tmp_path / "src",
        "VI",
        "ir",
        ["01.png", "Scene_B.PNG", "only_a.png", "sub/deep.png"],
        ["01.PNG", "scene_b.png", "only_b.png", "SUB/Deep.png"],
    )
    base = where(tmp_path / "src")
    pairs, failures = collect(base)
    by_id = {p[S.PAIR_ID]: p for p in pairs}
    assert set(by_id) == {"01", "Scene_B", "sub__deep"}
    assert by_id["Scene_B"][S.URI_A] == f"{base}/VI/Scene_B.PNG"
    assert by_id["Scene_B"][S.URI_B] == f"{base}/ir/scene_b.png"
    assert by_id["sub__deep"][S.URI_B] == f"{base}/ir/SUB/Deep.png"
    assert {p[S.TASK] for p in pairs} == {"vif"}  # detected from vi/ir
    missing = {f[S.PAIR_ID]: f for f in failures}
    assert set(missing) == {"only_a", "only_b"}
    assert "missing partner: A image" in missing["only_a"][S.ERROR] and missing["only_a"][S.URI_B] is None
    assert "missing partner: B image" in missing["only_b"][S.ERROR] and missing["only_b"][S.URI_A] is None


def test_folders_for_task_and_explicit(tmp_path: Path) -> None:
    make_folder_pairs(tmp_path, "MRI", "CT", ["1.png", "2.png"], ["1.png", "2.png"])
    make_folder_pairs(tmp_path, "left", "right", ["x.png"], ["x.png"])
    pairs, _ = collect(str(tmp_path))
    assert {p[S.TASK] for p in pairs} == {"medical"}
    # medical: A is CT (the base keeps its colour), B is MRI
    assert all("/CT/" in p[S.URI_A] and "/MRI/" in p[S.URI_B] for p in pairs)
    pairs, _ = collect(str(tmp_path), task="vif", config=PairsConfig(folder_a="LEFT", folder_b="right"))
    assert [(p[S.PAIR_ID], p[S.TASK]) for p in pairs] == [("x", "vif")]
    with pytest.raises(PairDiscoveryError, match="not found"):
        collect(str(tmp_path), config=PairsConfig(folder_a="vi", folder_b="ir"))
    with pytest.raises(PairDiscoveryError, match="no A/B sub-folders"):
        collect(str(tmp_path), task="pansharpen", config=PairsConfig(layout="folders"))


def test_ambiguous_stem_is_a_failure(tmp_path: Path) -> None:
    make_folder_pairs(tmp_path, "a", "b", ["1.png", "1.jpg", "2.png"], ["1.png", "2.png"])
    pairs, failures = collect(str(tmp_path))
    assert [p[S.PAIR_ID] for p in pairs] == ["2"]
    assert len(failures) == 1 and "ambiguous stem '1'" in failures[0][S.ERROR]


def test_suffix_patterns(tmp_path: Path, where) -> None:
    src = tmp_path / "src"
    make_folder_pairs(src, ".", "Arno", ["lytro-01-A.jpg", "lytro-01-B.jpg", "lytro-01-C.jpg", "lone-A.jpg"], [])
    make_folder_pairs(src, "Arno", "Sky", ["Arno_A.png", "Arno_b.PNG"], ["sKY_a.png", "Sky_B.png"])
    base = where(src)
    pairs, failures = collect(base)
    by_id = {p[S.PAIR_ID]: p for p in pairs}
    assert set(by_id) == {"lytro-01", "Arno", "sKY"}
    assert by_id["lytro-01"][S.URI_A] == f"{base}/lytro-01-A.jpg"
    assert by_id["lytro-01"][S.URI_B] == f"{base}/lytro-01-B.jpg"
    assert by_id["Arno"][S.URI_B] == f"{base}/Arno/Arno_b.PNG"
    assert [f[S.PAIR_ID] for f in failures] == ["lone"]
    cfg = PairsConfig(layout="suffix", pattern_a="{stem}-A.jpg", pattern_b="{stem}-C.jpg", recursive=False)
    pairs, failures = collect(base, config=cfg)
    assert [p[S.PAIR_ID] for p in pairs] == ["lytro-01"] and pairs[0][S.URI_B].endswith("lytro-01-C.jpg")


def test_spilled_listing_matches_in_memory(tmp_path: Path) -> None:
    stems = [f"img{i:03d}.png" for i in range(120)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in stems:
        (tmp_path / "a" / name).touch()
    for name in stems[5:]:
        (tmp_path / "b" / name.upper()).touch()
    small = PairsConfig(spill_threshold=10, spill_dir=str(tmp_path / "spill"), batch_size=16)
    (tmp_path / "spill").mkdir()
    spilled_pairs, spilled_failures = collect(str(tmp_path), config=small)
    pairs, failures = collect(str(tmp_path))
    key = lambda r: r[S.PAIR_ID]  # noqa: E731
    assert sorted(spilled_pairs, key=key) == sorted(pairs, key=key) and len(pairs) == 115
    assert sorted(spilled_failures, key=key) == sorted(failures, key=key) and len(failures) == 5
    assert list((tmp_path / "spill").iterdir()) == []  # spill files cleaned up


@pytest.mark.skipif(not (SHARED_DATASETS / "TNO").is_dir(), reason="shared datasets not present")
def test_real_dataset_layouts() -> None:
    assert len(collect(str(SHARED_DATASETS / "TNO"))[0]) == 25
    pairs, failures = collect(str(SHARED_DATASETS / "Lytro"), config=PairsConfig(recursive=False))
    assert len(pairs) == 20 and failures == []
    pairs, _ = collect(str(SHARED_DATASETS / "MEFB"))
    assert "Arno" in {p[S.PAIR_ID] for p in pairs}


def test_source_must_exist(tmp_path: Path) -> None:
    with pytest.raises(PairDiscoveryError, match="neither a manifest"):
        collect(str(tmp_path / "missing"))
    with pytest.raises(PairDiscoveryError, match="unknown task"):
        collect(str(tmp_path), task="nope")


# ------------------------------------------------------------------------------------------------------------
# Sanitising
# ------------------------------------------------------------------------------------------------------------

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def assert_safe_key(key: str) -> None:
    assert SAFE.match(key), key
    assert "/" not in key and "\\" not in key and ".." not in key
    assert not key.startswith(("_", ".", "-")) and len(key) <= 209
    joined = posixpath.normpath(posixpath.join("out", key + ".png"))
    assert joined.startswith("out/") and joined.count("/") == 1


@given(st.text(max_size=300))
@settings(max_examples=400, deadline=None)
def test_sanitized_keys_never_escape(raw: str) -> None:
    try:
        key = sanitize_pair_id(raw)
    except OutputKeyError:
        assert unicodedata.normalize("NFKC", raw).strip() == ""  # only blank ids are rejected
        return
    assert_safe_key(key)
    assert sanitize_pair_id(key) == key  # idempotent
    assert sanitize_pair_id(raw) == key  # deterministic


@given(st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "B", "_", "-", " ", "%", "é", "\x00"]), max_size=20))
@settings(max_examples=300, deadline=None)
def test_sanitized_traversal_alphabet(parts: list[str]) -> None:
    raw = "".join(parts)
    if not raw.strip():
        with pytest.raises(OutputKeyError):
            sanitize_pair_id(raw)
        return
    assert_safe_key(sanitize_pair_id(raw))


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}(\.[A-Za-z0-9_-]{1,8})?", fullmatch=True))
def test_safe_ids_unchanged(raw: str) -> None:
    if raw.split(".")[0].upper() in {"CON", "PRN", "AUX", "NUL"} or re.match(r"(?i)(COM|LPT)\d$", raw.split(".")[0]):
        return
    assert sanitize_pair_id(raw) == raw


@pytest.mark.parametrize(
    "raw",
    ["../../etc/passwd", "/abs/path", "a\\..\\b", ".", "..", "_manifest", "x/../../y", "C:\\temp", "CON"],
)
def test_sanitize_examples(raw: str) -> None:
    key = sanitize_pair_id(raw)
    assert_safe_key(key)
    assert key != raw


def test_sanitize_distinguishes_unsafe_ids() -> None:
    assert sanitize_pair_id("a/b") != sanitize_pair_id("a_b") != sanitize_pair_id("a\\b")
    for raw in (None, "", "   "):
        with pytest.raises(OutputKeyError):
            sanitize_pair_id(raw)


# ------------------------------------------------------------------------------------------------------------
# Ray Dataset
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_read_pairs_is_a_ray_dataset(tmp_path: Path, ray_session, s3_server: str, s3_bucket: str) -> None:
    make_folder_pairs(tmp_path / "src", "vi", "ir", ["1.png", "2.png", "3.png"], ["1.png", "2.png"])
    base = upload_tree(s3_server, tmp_path / "src", s3_bucket, "pairs")
    ds = read_pairs(base, config=PairsConfig(batch_size=2))
    rows = sorted(ds.take_all(), key=lambda r: r[S.PAIR_ID])
    assert set(ds.schema().names) == set(PAIR_SCHEMA.names)
    assert [(r[S.PAIR_ID], r[S.STATUS]) for r in rows] == [
        ("1", S.STATUS_OK),
        ("2", S.STATUS_OK),
        ("3", S.STATUS_FAILED),
    ]
    assert rows[0][S.URI_A] == f"{base}/vi/1.png" and rows[0][S.TASK] == "vif"
    assert rows[2][S.ERROR_STAGE] == S.STAGE_DISCOVER
    ok_only = read_pairs(base, include_failures=False)
    assert ok_only.count() == 2
    empty = tmp_path / "empty.csv"
    empty.write_text("pair_id,uri_a,uri_b\n")
    with pytest.raises(ManifestError, match="no data rows"):  # nothing found is not success
        read_pairs(str(empty))


def test_pair_schema_is_strings() -> None:
    assert all(field.type == pa.string() for field in PAIR_SCHEMA)
    assert PAIR_SCHEMA.names[:4] == list(S.PAIR_COLUMNS)
