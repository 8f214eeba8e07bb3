"""Catalogue layer: loading, schema validation, training cuts, extending, saving, downloads."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from functools import partial

import numpy as np
import pandas as pd
import pytest

from chronoflow._cache import cache_dir
from chronoflow.data.catalogue import (
    REVISED_CLUSTERS,
    add_cluster,
    catalogue_registry,
    load_catalogue,
    save_catalogue,
    summarize,
    training_sample,
    validate_catalogue,
)
from chronoflow.errors import CatalogueError

SHARED_SHA256 = "6a9e396803edcdb9a47e61f52fbb5fe87571bc246cb2b6813887bb5d6021de46"


def test_shared_catalogue_loads(catalogue, catalogue_path):
    assert hashlib.sha256(catalogue_path.read_bytes()).hexdigest() == SHARED_SHA256
    assert len(catalogue) == 8029
    assert catalogue["cluster"].nunique() == 27
    assert catalogue["BPRP_0"].isna().sum() == 26  # NULL read as missing
    assert catalogue["fiducial_age_Myr"].min() == pytest.approx(1.57)
    assert catalogue["fiducial_age_Myr"].max() == pytest.approx(3870)


def test_training_sample_counts_are_exact(catalogue):
    kept, report = training_sample(catalogue)
    assert report["cut"].tolist() == ["cmd_exclude == 0", "dered_exclude == 0", "phot_exclude == 0", "dr3_ruwe < 1.4"]
    assert report["removed"].tolist() == [32, 26, 0, 700]
    assert report["remaining"].tolist() == [7997, 7971, 7971, 7271]
    assert len(kept) == 7271
    assert kept["BPRP_0"].notna().all() and (kept["dr3_ruwe"] < 1.4).all()
    assert len(catalogue) == 8029  # caller's frame untouched


def test_training_sample_ruwe_switch(catalogue):
    kept, report = training_sample(catalogue, ruwe_max=None)
    assert len(kept) == 7971 and len(report) == 3


def test_env_variable_is_used(monkeypatch, catalogue_path):
    monkeypatch.setenv("CHRONOFLOW_CATALOGUE", str(catalogue_path))
    assert len(load_catalogue()) == 8029


def test_missing_file_error(tmp_path):
    with pytest.raises(CatalogueError, match=r"catalogue file not found: .*nope\.csv"):
        load_catalogue(tmp_path / "nope.csv")


# -- the registry: what its entries promise, checked against the data and the download path ------
def test_every_registry_entry_is_pinned_to_a_commit_and_a_checksum():
    reg = catalogue_registry()
    assert reg["default"] in reg["catalogues"]
    for key, entry in reg["catalogues"].items():
        # The keys catalogue_registry documents, and what load_catalogue needs to download.
        assert {"url", "sha256", "filename", "citation", "doi", "schema_version"} <= set(entry), key
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), key  # a sha256 digest, as fetch_verified compares it
        # Pinned to a commit (40 hex digits in the path), not to a branch whose file can change,
        # and the URL serves the file the entry names.
        assert re.search(r"/[0-9a-f]{40}/", entry["url"]), key
        assert entry["url"].startswith("https://") and entry["url"].rsplit("/", 1)[1] == entry["filename"], key
        assert entry["doi"] in entry["citation"], key  # the citation cites the archived copy
        assert entry["schema_version"] == 1, key  # the only schema validate_catalogue knows


def test_revised_clusters_are_catalogue_clusters_with_one_fiducial_age(catalogue):
    ages = catalogue.groupby("cluster")["fiducial_age_Myr"]
    for name in REVISED_CLUSTERS:  # a misspelt name would silently exclude nothing downstream
        assert name in ages.groups, name
        assert ages.get_group(name).nunique() == 1, name


@pytest.fixture
def registry_serving_shared(catalogue_path, monkeypatch):
    """The default registry entry, its URL moved to a loopback server that serves the ../shared
    file; returns (patch(sha256), entry, request counter). Nothing leaves the machine."""
    import chronoflow.data.catalogue as cat_mod

    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(catalogue_path.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    real = catalogue_registry()
    entry = dict(real["catalogues"][real["default"]])
    entry["url"] = f"http://127.0.0.1:{server.server_address[1]}/{catalogue_path.name}"

    def patch(sha256):
        served = dict(entry, sha256=sha256)
        monkeypatch.setattr(cat_mod, "catalogue_registry", lambda: {"default": real["default"], "catalogues": {real["default"]: served}})

    yield patch, entry, requests
    server.shutdown()
    server.server_close()


def test_the_pinned_checksum_refuses_the_shared_subset(registry_serving_shared, catalogue_path):
    # ../shared holds a strict subset of the published file (README there), so the registry's
    # pin, which is the full file's, must not match it: served at the registry's URL it is refused.
    patch, entry, requests = registry_serving_shared
    shared_sha = hashlib.sha256(catalogue_path.read_bytes()).hexdigest()
    assert entry["sha256"] != shared_sha
    assert entry["size_bytes"] > catalogue_path.stat().st_size  # the published file is the larger
    patch(entry["sha256"])
    with pytest.raises(CatalogueError, match=rf"failed its checksum \(expected sha256 {entry['sha256']}\)"):
        load_catalogue()
    assert requests == [f"/{catalogue_path.name}"]
    assert not (cache_dir() / entry["filename"]).exists()  # the refused file is not kept


def test_the_registry_path_loads_what_the_file_holds_when_the_checksum_matches(registry_serving_shared, catalogue, catalogue_path):
    patch, entry, requests = registry_serving_shared
    shared_sha = hashlib.sha256(catalogue_path.read_bytes()).hexdigest()  # computed here, not typed
    patch(shared_sha)
    first = load_catalogue()  # no path, no environment variable: the registry entry is used
    again = load_catalogue()
    assert len(requests) == 1  # the verified cache copy is reused, not downloaded again
    cached = cache_dir() / entry["filename"]
    assert cached.read_bytes() == catalogue_path.read_bytes()
    assert first.attrs["sha256"] == shared_sha and first.attrs["source"] == entry["filename"]
    pd.testing.assert_frame_equal(first, catalogue)
    pd.testing.assert_frame_equal(again, catalogue)


def test_an_unknown_registry_name_lists_the_known_ones():
    known = sorted(catalogue_registry()["catalogues"])
    with pytest.raises(CatalogueError, match=rf"unknown catalogue 'nope'; known: {', '.join(known)}$"):
        load_catalogue(name="nope")


def test_summarize_by_cluster_and_subgroup(catalogue):
    by_cluster = summarize(catalogue)
    assert len(by_cluster) == 27 and by_cluster["n_stars"].sum() == len(catalogue)
    assert by_cluster["age_myr"].is_monotonic_increasing
    assert by_cluster["n_stars"].loc["Pleiades"] == (catalogue["cluster"] == "Pleiades").sum()
    assert summarize(catalogue, by="subgroup")["n_stars"].sum() == len(catalogue)


@pytest.mark.parametrize(("by", "what"), [("foo", "not a column of the catalogue"), ("Prot", "a numeric column")])
def test_summarize_by_an_unknown_column_is_one_line(catalogue, by, what):
    with pytest.raises(CatalogueError) as info:
        summarize(catalogue, by=by)
    msg = str(info.value)
    assert "\n" not in msg and f"cannot summarize by {by!r}: {what}" in msg
    assert msg.endswith("group by one of: 'cluster', 'subgroup', 'data_catalog', 'Prot_source', 'dustmap'")


@pytest.fixture
def small(catalogue):
    return catalogue.iloc[:20].reset_index(drop=True).copy()


@pytest.mark.parametrize(
    ("column", "value", "pattern"),
    [
        ("Prot", np.nan, r"column 'Prot': 1 bad row \(missing, NaN or infinite\).*allowed: a finite period > 0 d"),
        ("Prot", 0.0, r"column 'Prot': 1 bad row \(<= 0\).*allowed: a finite period > 0 d"),
        ("Prot", -3.0, r"column 'Prot': 1 bad row \(<= 0\)"),
        ("mem_prob_source", 1.2, r"column 'mem_prob_source': 1 bad row \(> 1\).*allowed: a probability in \[0, 1\]"),
        ("mem_prob_hdbscan", -0.1, r"column 'mem_prob_hdbscan': 1 bad row \(< 0\)"),
        ("cmd_exclude", 2, r"column 'cmd_exclude': 1 bad row \(not 0 or 1\)"),
        ("fiducial_age_Myr", 0.0, r"column 'fiducial_age_Myr'"),
    ],
)
def test_bad_values_are_named(small, column, value, pattern):
    small[column] = small[column].astype(float)
    small.loc[3, column] = value
    gid = int(small.loc[3, "GaiaDR3_ID"])
    with pytest.raises(CatalogueError, match=pattern) as info:
        validate_catalogue(small)
    assert f"GaiaDR3_ID {gid} (row 3)" in str(info.value)


def test_missing_column(small):
    with pytest.raises(CatalogueError, match=r"missing column 'Prot'; the catalogue schema requires"):
        validate_catalogue(small.drop(columns="Prot"))


def test_duplicate_id(small):
    small.loc[5, "GaiaDR3_ID"] = small.loc[2, "GaiaDR3_ID"]
    with pytest.raises(CatalogueError, match=r"column 'GaiaDR3_ID': 2 bad rows \(repeated id\).*\(row 2\), .*\(row 5\)"):
        validate_catalogue(small)


def test_bad_file_on_disk_reports_column(tmp_path, small):
    small["Prot"] = small["Prot"].astype(float)
    small.loc[0, "Prot"] = -1.0
    path = tmp_path / "bad.csv"
    small.to_csv(path, index=False, na_rep="NULL")
    with pytest.raises(CatalogueError, match="column 'Prot'"):
        load_catalogue(path)


# -- downloads over a loopback server ---------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "cat.csv").write_bytes(b"GaiaDR3_ID,Prot\n1,2.0\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_download_verifies_checksum(served, tmp_path):
    from chronoflow._cache import fetch_verified

    url, root = served
    good = hashlib.sha256((root / "cat.csv").read_bytes()).hexdigest()
    path = fetch_verified(f"{url}/cat.csv", good, "cat.csv", directory=tmp_path / "c1")
    assert path.read_bytes() == (root / "cat.csv").read_bytes()
    with pytest.raises(CatalogueError, match=r"failed its checksum \(expected sha256 0{64}\)"):
        fetch_verified(f"{url}/cat.csv", "0" * 64, "cat.csv", directory=tmp_path / "c2")
    assert not (tmp_path / "c2" / "cat.csv").exists()


def test_download_failure_is_one_line(served, tmp_path):
    from chronoflow._cache import fetch_verified

    url, _ = served
    with pytest.raises(CatalogueError, match=r"could not download .*missing\.csv.*CHRONOFLOW_CATALOGUE"):
        fetch_verified(f"{url}/missing.csv", "0" * 64, "m.csv", directory=tmp_path)


# -- extending and saving ---------------------------------------------------------------------
def _minimal(n=5):
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "Prot": rng.uniform(1, 10, n),
            "BPRP_0": rng.uniform(0.8, 2.0, n),
            "e_BPRP_0": np.full(n, 0.02),
            "membership": np.full(n, 0.9),
            "my_note": [f"star{i}" for i in range(n)],
        }
    )


def test_add_cluster_minimal_schema(small):
    merged = add_cluster(small, _minimal(), cluster="MyCluster", age_myr=650.0)
    new = merged[merged["cluster"] == "MyCluster"]
    assert len(merged) == len(small) + 5 and len(new) == 5
    assert (new["fiducial_age_Myr"] == 650.0).all() and (new["mem_prob_source"] == 0.9).all()
    assert (new["GaiaDR3_ID"] < 0).all() and merged["GaiaDR3_ID"].is_unique
    assert new["my_note"].tolist() == [f"star{i}" for i in range(5)]  # extra columns kept
    assert (new["cmd_exclude"] == 0).all()
    validate_catalogue(merged)


def test_add_cluster_refuses_duplicates_and_bad_rows(small):
    dup = small.iloc[:2].copy()
    with pytest.raises(CatalogueError, match="id already in the catalogue"):
        add_cluster(small, dup)
    bad = _minimal()
    bad.loc[1, "Prot"] = -2.0
    with pytest.raises(CatalogueError, match="column 'Prot'"):
        add_cluster(small, bad, cluster="X", age_myr=100.0)
    with pytest.raises(CatalogueError, match="missing column 'fiducial_age_Myr'"):
        add_cluster(small, _minimal(), cluster="X")
    with pytest.raises(CatalogueError, match="pass cluster="):
        add_cluster(small, _minimal(), age_myr=100.0)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_save_round_trip(small, tmp_path, suffix):
    path = save_catalogue(small, tmp_path / f"cat{suffix}")
    back = load_catalogue(path)
    assert len(back) == len(small)
    np.testing.assert_allclose(back["Prot"], small["Prot"])
    assert back["GaiaDR3_ID"].tolist() == small["GaiaDR3_ID"].tolist()
    assert back["cluster"].astype(str).tolist() == small["cluster"].astype(str).tolist()
    if suffix == ".fits":
        from astropy.table import Table

        table = Table.read(path)
        assert str(table["Prot"].unit) == "d" and str(table["fiducial_age_Myr"].unit) == "Myr"
    with pytest.raises(CatalogueError, match="exists"):
        save_catalogue(small, path)
