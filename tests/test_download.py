import hashlib
import http.server
import os
import socket
import sys
import threading
from functools import partial

import pytest
import yaml
from conftest import ROOT, run

from actgrad.data.names import fetch_names
from actgrad.errors import DataError


@pytest.fixture
def serve(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/names.txt"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_download_fills_the_cache_then_works_offline(serve, tmp_path, names_text):
    root, url = serve
    data = names_text.encode()
    (root / "names.txt").write_bytes(data)
    cache = tmp_path / "cache"
    assert fetch_names(f"{url}/names.txt", sha(data), cache) == data
    assert (cache / "names.txt").read_bytes() == data
    # the server is gone from this URL's point of view: the cache answers
    assert fetch_names(closed_port_url(), sha(data), cache) == data


def test_hash_mismatch_names_both_hashes_and_caches_nothing(serve, tmp_path, names_text):
    root, url = serve
    good = names_text.encode()
    (root / "names.txt").write_bytes(good[:1000])  # a truncated download
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        fetch_names(f"{url}/names.txt", sha(good), cache)
    assert sha(good) in str(e.value) and sha(good[:1000]) in str(e.value)
    assert not (cache / "names.txt").exists()


def test_unreachable_url_names_the_url_and_the_offline_cache(tmp_path):
    url = closed_port_url()
    with pytest.raises(DataError) as e:
        fetch_names(url, "0" * 64, tmp_path / "empty")
    assert url in str(e.value) and "ACTGRAD_DATA_CACHE" in str(e.value)


def stage_env(cache):
    return {**os.environ, "ACTGRAD_DATA_CACHE": str(cache), "PYTHONPATH": str(ROOT)}


def write_data_params(folder, url, sha256):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"url": url, "sha256": sha256}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def test_download_stage_writes_the_file_from_the_server(serve, tmp_path, names_text):
    root, url = serve
    (root / "names.txt").write_text(names_text)
    write_data_params(tmp_path, f"{url}/names.txt", sha(names_text.encode()))
    run(
        [sys.executable, "-m", "pipeline.stages.download", "--names", "data/raw/names.txt"],
        tmp_path,
        stage_env(tmp_path / "c"),
    )
    assert (tmp_path / "data/raw/names.txt").read_text() == names_text


def test_download_stage_fails_cleanly_on_a_corrupt_file(serve, tmp_path, names_text):
    root, url = serve
    corrupt = names_text.replace("emma", "emmx").encode()
    (root / "names.txt").write_bytes(corrupt)
    write_data_params(tmp_path, f"{url}/names.txt", sha(names_text.encode()))
    out = run(
        [sys.executable, "-m", "pipeline.stages.download", "--names", "data/raw/names.txt"],
        tmp_path,
        stage_env(tmp_path / "c"),
        check=False,
    )
    assert out.returncode != 0
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: sha256 mismatch for {url}/names.txt: expected ")
    assert sha(names_text.encode()) in error and sha(corrupt) in error
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()
