"""Faults: interrupted writes leave no output that looks complete; downloads and cache entries that
fail their checksum are never used. Everything runs offline (a loopback HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time

import numpy as np
import pandas as pd
import pytest

from chronoflow.scale import streaming
from chronoflow._cache import fetch_verified
from chronoflow.errors import CatalogueError, ChronoflowError
from chronoflow.scale.streaming import age_stars_file


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- streaming: write to a temporary file, rename at the end ----------------------------------
@pytest.fixture
def tiny_csv(tmp_path):
    """Six stars, so that chunk_rows=2 gives three chunks."""
    src = tmp_path / "stars.csv"
    pd.DataFrame({"Prot": [8.0, 5.0, 12.0, 3.0, 9.0, 7.0], "BPRP_0": [1.2, 1.0, 1.5, 0.9, 1.3, 1.1],
                  "e_BPRP_0": 0.02}).to_csv(src, index=False)  # fmt: skip
    return src


def _fail_on_second_chunk(monkeypatch, exc: BaseException, directory, seen: list) -> list:
    """Make age_chunk raise ``exc`` on its second call, listing ``directory`` into ``seen`` then."""
    real, calls = streaming.age_chunk, []

    def flaky(chunk, **kwargs):
        calls.append(len(chunk))
        if len(calls) == 2:
            seen.extend(sorted(p.name for p in directory.iterdir()))
            raise exc
        return real(chunk, **kwargs)

    monkeypatch.setattr(streaming, "age_chunk", flaky)
    return calls


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_failed_run_leaves_no_output_and_no_temporary_file(tiny_csv, tmp_path, monkeypatch, suffix, exc):
    seen: list[str] = []
    calls = _fail_on_second_chunk(monkeypatch, exc, tmp_path, seen)
    dst = tmp_path / f"ages{suffix}"
    with pytest.raises(type(exc)):
        age_stars_file(tiny_csv, dst, chunk_rows=2, progress=False)
    assert calls == [2, 2]  # it did fail mid-run, after one chunk was written
    # Mid-run the rows were going to a hidden temporary beside dst, never to dst itself.
    assert "ages" + suffix not in seen
    assert len(seen) == 2 and seen[0].startswith(f".ages{suffix}.partial-") and seen[1] == "stars.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stars.csv"]  # no dst, no temporary


def test_a_failed_run_leaves_an_existing_output_untouched(tiny_csv, tmp_path, monkeypatch):
    dst = tmp_path / "ages.parquet"
    dst.write_bytes(b"the previous run's results")
    _fail_on_second_chunk(monkeypatch, RuntimeError("worker lost"), tmp_path, [])
    with pytest.raises(RuntimeError, match="worker lost"):
        age_stars_file(tiny_csv, dst, chunk_rows=2, progress=False)
    assert dst.read_bytes() == b"the previous run's results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ages.parquet", "stars.csv"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_successful_run_leaves_exactly_the_output(tiny_csv, tmp_path, suffix):
    dst = tmp_path / f"ages{suffix}"
    dst.write_bytes(b"stale")  # replaced
    report = age_stars_file(tiny_csv, dst, chunk_rows=2, progress=False)
    assert (report.n_rows, report.n_chunks, report.n_aged) == (6, 3, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["stars.csv", dst.name])
    got = pd.read_parquet(dst) if suffix == ".parquet" else pd.read_csv(dst)
    np.testing.assert_allclose(got["Prot"], [8.0, 5.0, 12.0, 3.0, 9.0, 7.0], rtol=0, atol=0)
    assert np.isfinite(got["log10_age_median"]).all()


# -- Dask: write a sibling directory, swap it in at the end -----------------------------------
def test_dask_failed_run_keeps_the_previous_output_and_a_good_run_replaces_it(tmp_path):
    pytest.importorskip("dask.dataframe", reason="the dask extra is part of the test extra")
    distributed = pytest.importorskip("distributed")
    from chronoflow.scale.dask_backend import age_stars_file_dask

    rows = pd.DataFrame({"Prot": [8.0] * 12, "BPRP_0": [1.2] * 12, "e_BPRP_0": [0.02] * 12,
                         "id": [str(i) for i in range(10)] + ["x", "y"]})  # fmt: skip
    bad, good = tmp_path / "drift.csv", tmp_path / "stars.csv"
    rows.to_csv(bad, index=False)  # 'id' is numeric in the first blocks, text in the last
    rows.assign(id=range(12)).to_csv(good, index=False)
    dst = tmp_path / "ages.parquet"
    dst.mkdir()
    pd.DataFrame({"old": [1]}).to_parquet(dst / "part.00000.parquet")
    before = (dst / "part.00000.parquet").read_bytes()

    # In-process workers (one thread): the same code path as a cluster, without process start-up.
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        with pytest.raises(ChronoflowError, match="a partition failed"):
            age_stars_file_dask(bad, dst, blocksize=100, client=client, progress=False)
        assert sorted(p.name for p in dst.iterdir()) == ["part.00000.parquet"]
        assert (dst / "part.00000.parquet").read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ages.parquet", "drift.csv", "stars.csv"]

        report = age_stars_file_dask(good, dst, blocksize=100, client=client, progress=False)
    assert report.n_chunks >= 2 and report.n_rows == 12
    got = pd.read_parquet(dst)
    assert "old" not in got.columns and got["id"].tolist() == list(range(12))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ages.parquet", "drift.csv", "stars.csv"]


def test_dask_refuses_to_replace_what_is_not_its_own_output(tmp_path):
    pytest.importorskip("distributed")
    from chronoflow.scale.dask_backend import age_stars_file_dask

    src = tmp_path / "stars.csv"
    src.write_text("Prot,BPRP_0,e_BPRP_0\n8,1.2,0.02\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ChronoflowError, match=r"holds 'notes.txt', which is not a part\.\*\.parquet file") as info:
        age_stars_file_dask(src, tmp_path / "out", progress=False)
    assert "\n" not in str(info.value) and (tmp_path / "out" / "notes.txt").read_text() == "mine"
    (tmp_path / "file.parquet").write_bytes(b"x")
    with pytest.raises(ChronoflowError, match="exists and is a file"):
        age_stars_file_dask(src, tmp_path / "file.parquet", progress=False)


# -- downloads and the cache --------------------------------------------------------------------
class _Server:
    """A loopback HTTP server for one file whose bytes (and response delay) the test can change."""

    def __init__(self, data: bytes, delay: float = 0.0):
        self.data, self.delay, self.requests = data, delay, 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                time.sleep(owner.delay)
                self.send_response(200)
                self.send_header("Content-Length", str(len(owner.data)))
                self.end_headers()
                self.wfile.write(owner.data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cat.csv"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


GOOD = b"GaiaDR3_ID,Prot\n1,2.0\n"


@pytest.fixture
def server():
    srv = _Server(GOOD)
    yield srv
    srv.close()


def test_a_download_that_fails_its_checksum_leaves_nothing_in_the_cache(server, tmp_path):
    cache = tmp_path / "cache"
    server.data = b"GaiaDR3_ID,Prot\n1,2.5\n"  # the server's copy changed
    with pytest.raises(CatalogueError) as info:
        fetch_verified(server.url, _sha(GOOD), "cat.csv", directory=cache)
    msg = str(info.value)
    assert "\n" not in msg and f"download of {server.url} failed its checksum (expected sha256 {_sha(GOOD)})" in msg
    assert list(cache.iterdir()) == []  # neither the file nor pooch's temporary


def test_a_verified_cache_entry_is_used_offline(server, tmp_path):
    path = fetch_verified(server.url, _sha(GOOD), "cat.csv", directory=tmp_path)
    server.close()
    assert fetch_verified(server.url, _sha(GOOD), "cat.csv", directory=tmp_path) == path
    assert path.read_bytes() == GOOD and server.requests == 1


def test_a_corrupt_cache_entry_is_fetched_again_and_verified(server, tmp_path):
    (tmp_path / "cat.csv").write_bytes(GOOD[:-3])  # a truncated copy
    path = fetch_verified(server.url, _sha(GOOD), "cat.csv", directory=tmp_path)
    assert path == tmp_path / "cat.csv" and path.read_bytes() == GOOD and server.requests == 1
    assert [p.name for p in tmp_path.iterdir()] == ["cat.csv"]


@pytest.mark.parametrize("fault", ["server copy changed", "offline"])
def test_a_corrupt_cache_entry_that_cannot_be_refetched_is_an_error_and_removed(server, tmp_path, fault):
    (tmp_path / "cat.csv").write_bytes(b"GaiaDR3_ID,Prot\n1,9.9\n")  # edited by hand
    if fault == "offline":
        server.close()
    else:
        server.data = b"GaiaDR3_ID,Prot\n1,2.5\n"
    with pytest.raises(CatalogueError) as info:
        fetch_verified(server.url, _sha(GOOD), "cat.csv", directory=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and server.url in msg
    assert msg.startswith("could not download" if fault == "offline" else f"download of {server.url} failed its checksum")
    assert f"the cached copy {tmp_path / 'cat.csv'} failed its checksum and was removed" in msg
    assert list(tmp_path.iterdir()) == []


def test_concurrent_fetches_of_one_key_end_with_one_verified_file(tmp_path):
    srv = _Server(GOOD * 2000, delay=0.3)  # slow enough that both downloads are in flight at once
    want = _sha(srv.data)
    start, results, errors = threading.Barrier(2), [], []

    def fetch():
        start.wait()
        try:
            results.append(fetch_verified(srv.url, want, "cat.csv", directory=tmp_path))
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        srv.close()
    assert errors == [] and results == [tmp_path / "cat.csv"] * 2
    assert srv.requests == 2  # both really downloaded, neither found the other's file
    assert [p.name for p in tmp_path.iterdir()] == ["cat.csv"]  # no stray temporaries
    assert _sha((tmp_path / "cat.csv").read_bytes()) == want


# -- the registered catalogue: a tampered cache copy is never loaded ----------------------------
@pytest.fixture
def registered(catalogue, monkeypatch):
    """The registry pointing at a small valid catalogue served on loopback (the cache is the
    per-test $CHRONOFLOW_CACHE_DIR set in conftest)."""
    import chronoflow.data.catalogue as cat_mod
    from chronoflow._cache import cache_dir

    data = catalogue.iloc[:30].to_csv(index=False, na_rep="NULL").encode()
    srv = _Server(data)
    entry = {"url": srv.url, "sha256": _sha(data), "filename": "prot_catalogue.csv"}
    monkeypatch.setattr(cat_mod, "catalogue_registry", lambda: {"default": "toy", "catalogues": {"toy": entry}})
    yield srv, cache_dir() / "prot_catalogue.csv"
    srv.close()


def test_load_catalogue_refetches_a_tampered_cache_copy(registered):
    from chronoflow.data.catalogue import load_catalogue

    srv, cached = registered
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(srv.data[:-40])  # truncated
    df = load_catalogue()
    assert len(df) == 30 and df.attrs["sha256"] == _sha(srv.data) and cached.read_bytes() == srv.data


def test_load_catalogue_with_a_tampered_cache_copy_offline_is_a_clear_error(registered):
    from chronoflow.data.catalogue import load_catalogue

    srv, cached = registered
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(srv.data.replace(b",", b";", 1))  # one byte edited
    srv.close()
    with pytest.raises(CatalogueError) as info:
        load_catalogue()
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"could not download {srv.url}")
    assert "set CHRONOFLOW_CATALOGUE to a local copy" in msg and "failed its checksum and was removed" in msg
    assert not cached.exists()
