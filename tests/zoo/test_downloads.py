"""Verified downloads of manifest weights, against an HTTP server on 127.0.0.1 that the test starts.

The test manifest's URLs are the real keras.applications ones; `ZOO_WEIGHTS_MIRROR` sends them
to the local server, which serves files the test makes (a tiny ResNet's weights saved in the
keras.applications `.h5` layout) under the same paths, and misbehaves on request: a truncated
body, a dropped connection, a slow body for two concurrent downloads.
"""

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import zoo
from layers import compat
from tests.helpers import random_pixels
from zoo import weights as weights_lib

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "https://storage.googleapis.com"
FOLDER = "/tensorflow/keras-applications/resnet"
SHAPE = (32, 32, 3)
TINY = dict(depths=(1, 1, 1, 1), input_shape=SHAPE)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Files under the served root; `/truncated/...` sends half the body it announces, `/closed/...`
    sends half the body with no Content-Length and closes the connection (a close-delimited body,
    so the client cannot tell), `/drop/...` closes the connection without a response, `/slow/...`
    sends the body in slow pieces."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        for prefix in ("/truncated", "/closed", "/drop", "/slow"):
            if self.path.startswith(prefix + "/"):
                return self._misbehave(prefix, self.path[len(prefix):])
        return super().do_GET()

    def _misbehave(self, prefix, path):
        if prefix == "/drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        body = Path(self.directory, path.lstrip("/")).read_bytes()
        if prefix == "/closed":
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if prefix == "/truncated":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        for start in range(0, len(body), max(1, len(body) // 8)):
            self.wfile.write(body[start:start + max(1, len(body) // 8)])
            self.wfile.flush()
            time.sleep(0.1)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def write_keras2_h5(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    compat.save_legacy_h5_weights(model, path)


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def manifest_entry(model, tag, file_name, digest, *, no_top=None, **extra):
    entry = {
        "model": model, "tag": tag, "task": "classification", "url": f"{ORIGIN}{FOLDER}/{file_name}",
        "file_name": file_name, "format": "h5", "hash_algorithm": "md5", "hash": digest,
        "size_bytes": None, "size_note": "test", "preprocessing": "caffe",
        "classes": {"count": 1000, "dataset": "imagenet"}, "metrics": {},
        "metrics_source": "https://example.invalid/", "license": "test",
    }
    if no_top:
        entry["no_top"] = {"url": f"{ORIGIN}{FOLDER}/{no_top[0]}", "file_name": no_top[0],
                           "hash_algorithm": "md5", "hash": no_top[1], "size_bytes": None, "size_note": "test"}
    entry.update(extra)
    return entry


@pytest.fixture
def setup(server, tmp_path, monkeypatch):
    """A tiny ResNet-18's weights served as `resnet18.imagenet` (top and no-top files)."""
    root, url = server
    source = zoo.build("resnet18", classes=1000, **TINY)
    headless = zoo.build("resnet18", include_top=False, **TINY)
    headless.set_weights(source.get_weights()[:len(headless.get_weights())])
    top, notop = root / FOLDER.lstrip("/") / "tiny_top.h5", root / FOLDER.lstrip("/") / "tiny_notop.h5"
    write_keras2_h5(source, top)
    write_keras2_h5(headless, notop)
    manifest = tmp_path / "manifest.json"

    def write_manifest(*entries):
        manifest.write_text(json.dumps({"schema_version": 1, "entries": list(entries)}))

    write_manifest(manifest_entry("resnet18", "imagenet", "tiny_top.h5", md5(top), no_top=("tiny_notop.h5", md5(notop))))
    monkeypatch.setenv("ZOO_WEIGHTS_MANIFEST", str(manifest))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", url)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("ZOO_ALLOW_UNVERIFIED_WEIGHTS", raising=False)
    return {"root": root, "url": url, "source": source, "top": top, "notop": notop,
            "cache": tmp_path / "home" / "weights", "write_manifest": write_manifest}


def cached(setup):
    return sorted(p.name for p in setup["cache"].iterdir()) if setup["cache"].exists() else []


def test_build_downloads_through_the_mirror_verifies_caches_and_loads(setup, rng, capsys):
    assert zoo.describe("resnet18").weights == ["imagenet"]
    model = zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    assert "downloading " + setup["url"] + FOLDER + "/tiny_top.h5" in capsys.readouterr().err
    assert cached(setup) == ["tiny_top.h5"]
    assert model.weights_load_report.missing == [] and model.weights_load_report.unused == []
    pixels = random_pixels(rng, (1,) + SHAPE)
    np.testing.assert_allclose(np.asarray(model(pixels)), np.asarray(setup["source"](pixels)), atol=1e-6)
    # Without the top, the smaller no-top file is the one fetched.
    headless = zoo.build("resnet18", weights="imagenet", include_top=False, **TINY)
    assert cached(setup) == ["tiny_notop.h5", "tiny_top.h5"]
    assert headless.weights_load_report.unused == []


def test_mirror_keeps_the_path_and_replaces_the_origin(monkeypatch):
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", "http://mirror.local:8000/prefix/")
    assert weights_lib.resolve_url(f"{ORIGIN}{FOLDER}/a.h5") == f"http://mirror.local:8000/prefix{FOLDER}/a.h5"
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", "mirror.local")
    with pytest.raises(ValueError, match="ZOO_WEIGHTS_MIRROR must be an http"):
        weights_lib.resolve_url(f"{ORIGIN}/a.h5")


def test_wrong_hash_names_both_hashes_and_leaves_nothing(setup):
    setup["write_manifest"](manifest_entry("resnet18", "imagenet", "tiny_top.h5", "0" * 32))
    with pytest.raises(weights_lib.WeightsDownloadError, match=f"md5 found {md5(setup['top'])}, expected 0{{32}}"):
        zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    assert cached(setup) == []


def test_truncated_body_and_dropped_connection_leave_nothing(setup, monkeypatch):
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", setup["url"] + "/truncated")
    size = setup["top"].stat().st_size
    with pytest.raises(weights_lib.WeightsDownloadError,
                       match=rf"truncated: {size // 2} of {size} bytes; md5 found [0-9a-f]{{32}}, expected {md5(setup['top'])}"):
        zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    assert cached(setup) == []
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", setup["url"] + "/drop")
    with pytest.raises(weights_lib.WeightsDownloadError, match="download of .*/drop/.* failed"):
        zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    assert cached(setup) == []


def test_offline_fails_clearly_without_a_cached_file_and_works_with_one(setup, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(weights_lib.WeightsDownloadError, match="ZOO_OFFLINE=1: tiny_top.h5 is not in the cache"):
        zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    monkeypatch.delenv("ZOO_OFFLINE")
    zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", "http://127.0.0.1:9")  # nothing listens: must not be asked
    model = zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    assert model.weights_load_report.loaded
    # A corrupted cached file is not loaded offline either.
    (setup["cache"] / "tiny_top.h5").write_bytes(b"corrupt")
    with pytest.raises(weights_lib.WeightsDownloadError, match="cached .* has md5 .*, expected"):
        zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)


CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("zoo_weights", sys.argv[1])
weights = sys.modules["zoo_weights"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(weights)  # the module alone: no TensorFlow needed to download
path = weights.fetch(sys.argv[2], "tiny_top.h5", hash_algorithm="md5", file_hash_value=sys.argv[3], progress=False)
print(path)
"""


def test_two_processes_downloading_the_same_file_at_once(setup):
    url = f"{setup['url']}/slow{FOLDER}/tiny_top.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    arguments = [sys.executable, "-c", CHILD, str(ROOT / "zoo" / "weights.py"), url, md5(setup["top"])]
    children = [subprocess.Popen(arguments, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err
        assert out.strip() == str(setup["cache"] / "tiny_top.h5")
    assert cached(setup) == ["tiny_top.h5"]  # no temporary file left behind
    assert md5(setup["cache"] / "tiny_top.h5") == md5(setup["top"])


def test_an_entry_without_a_published_hash_needs_an_explicit_choice(setup, monkeypatch):
    entry = manifest_entry("resnet18", "unverified", "tiny_top.h5", None, hash_algorithm=None,
                           hash_note="the publisher gives none")
    setup["write_manifest"](entry)
    with pytest.raises(ValueError, match="publish no hash .*refusing to load an unverified file.*ZOO_ALLOW_UNVERIFIED_WEIGHTS"):
        zoo.build("resnet18", weights="unverified", classes=1000, **TINY)
    assert cached(setup) == []
    with pytest.raises(weights_lib.WeightsDownloadError, match="corrupt: sha256 found"):
        weights_lib.fetch_entry("resnet18", "unverified", expected_hash="sha256:" + "0" * 64)
    sha256 = hashlib.sha256(setup["top"].read_bytes()).hexdigest()
    assert weights_lib.fetch_entry("resnet18", "unverified", expected_hash=f"sha256:{sha256}").is_file()
    monkeypatch.setenv("ZOO_ALLOW_UNVERIFIED_WEIGHTS", "1")
    model = zoo.build("resnet18", weights="unverified", classes=1000, **TINY)
    assert model.weights_load_report.loaded


def test_checkpoint_archives_need_a_registered_importer(setup, monkeypatch):
    archive = setup["root"] / FOLDER.lstrip("/") / "ckpt.tar.gz"
    archive.write_bytes(b"not really a tarball")
    setup["write_manifest"](manifest_entry("resnet18", "slim", "ckpt.tar.gz", md5(archive), format="tf_checkpoint_archive"))
    # zoo.segmentation registers the real importer; take it away to see the refusal.
    monkeypatch.delitem(weights_lib.IMPORTERS, "tf_checkpoint_archive", raising=False)
    with pytest.raises(ValueError, match="no importer is registered"):
        zoo.build("resnet18", weights="slim", classes=1000, **TINY)
    seen = []

    def importer(model, path):
        seen.append(Path(path).read_bytes())
        return weights_lib.LoadReport(source=str(path), loaded=["conv1_conv"])

    monkeypatch.setitem(weights_lib.IMPORTERS, "tf_checkpoint_archive", importer)
    model = zoo.build("resnet18", weights="slim", classes=1000, **TINY)
    assert seen == [b"not really a tarball"] and model.weights_load_report.loaded == ["conv1_conv"]


def test_a_cut_short_unverified_download_is_refused_and_a_cut_short_cached_file_refetched(setup, monkeypatch):
    import warnings

    entry = manifest_entry("resnet18", "unverified", "tiny_top.h5", None, hash_algorithm=None,
                           hash_note="the publisher gives none")
    setup["write_manifest"](entry)
    monkeypatch.setenv("ZOO_ALLOW_UNVERIFIED_WEIGHTS", "1")
    # No Content-Length and half the body: only the file itself can tell that it is not whole.
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", setup["url"] + "/closed")
    with pytest.raises(weights_lib.WeightsDownloadError,
                       match=r"is incomplete or corrupt \(\d+ bytes, no published hash"):
        zoo.build("resnet18", weights="unverified", classes=1000, **TINY)
    assert cached(setup) == []
    # A cut-short file already in the cache (from a zoo before this check) is not used for good.
    setup["cache"].mkdir(parents=True, exist_ok=True)
    whole = setup["top"].read_bytes()
    (setup["cache"] / "tiny_top.h5").write_bytes(whole[: len(whole) // 2])
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(weights_lib.WeightsDownloadError,
                       match=f"the cached {setup['cache'] / 'tiny_top.h5'} is incomplete or corrupt"):
        zoo.build("resnet18", weights="unverified", classes=1000, **TINY)
    monkeypatch.delenv("ZOO_OFFLINE")
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", setup["url"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = zoo.build("resnet18", weights="unverified", classes=1000, **TINY)
    assert any("incomplete or corrupt" in str(w.message) and "downloading it again" in str(w.message) for w in caught)
    assert model.weights_load_report.loaded and (setup["cache"] / "tiny_top.h5").read_bytes() == whole


def test_download_errors_name_the_mirror_offline_switch_and_cache(setup, monkeypatch):
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", setup["url"] + "/drop")
    with pytest.raises(weights_lib.WeightsDownloadError) as raised:
        zoo.build("resnet18", weights="imagenet", classes=1000, **TINY)
    message = str(raised.value)
    assert "ZOO_WEIGHTS_MIRROR=" in message and "ZOO_OFFLINE=1" in message and str(setup["cache"]) in message


@pytest.mark.slow
def test_cli_download_failure_is_one_error_line(setup):
    from tests.helpers import run_zoo

    result = run_zoo("export", "resnet18", "--weights", "imagenet", "--set", "depths=(1, 1, 1, 1)",
                     "--set", "input_shape=(32, 32, 3)", "--out", setup["cache"].parent / "exported",
                     env={"ZOO_WEIGHTS_MIRROR": setup["url"] + "/drop"})
    assert result.returncode == 2, result.stderr
    assert "zoo export: error: download of " in result.stderr and "ZOO_OFFLINE=1" in result.stderr
    assert "Traceback" not in result.stderr


def test_stale_partial_downloads_are_removed_and_the_cached_file_follows_the_umask(setup):
    setup["cache"].mkdir(parents=True)
    stale, fresh = setup["cache"] / ".tiny_top.h5.k3j4h5g6.part", setup["cache"] / ".tiny_top.h5.a1b2c3d4.part"
    other = setup["cache"] / "notes.part"  # not a name the zoo makes
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    mask = os.umask(0o022)
    try:
        path = weights_lib.fetch(f"{ORIGIN}{FOLDER}/tiny_top.h5", "tiny_top.h5", hash_algorithm="md5",
                                 file_hash_value=md5(setup["top"]), progress=False)
    finally:
        os.umask(mask)
    # The stale one (killed an hour ago) is gone; one still being written, and a user's file, stay.
    assert cached(setup) == [".tiny_top.h5.a1b2c3d4.part", "notes.part", "tiny_top.h5"]
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp's 0600 would hide it from other users
