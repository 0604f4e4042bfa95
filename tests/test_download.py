"""download.py against a loopback HTTP server that serves real HPA samples as HPAv18-style RGB
JPEGs and injects faults: HTTP 500, timeouts, cut bodies, dropped connections, 404."""

import argparse
import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pandas as pd
import pytest
from scripts import run_script

from conftest import shared_path
from hpa.cli import download
from hpa.data import download as library
from hpa.data.images import read_channel, read_sample
from hpa.data.labels import COLORS
from hpa.data.layout import HPAV18_TABLE
from hpa.errors import ConfigError, SampleError

EXT_IDS = ["10580_1610_C1_1", "10580_1610_C1_2", "777_88_D2_1"]


class Server:
    def __init__(self, files: dict[str, bytes]):
        self.files, self.faults, self.hits = files, {}, Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits[self.path] += 1
                plan = outer.faults.get(self.path, [])
                fault = plan.pop(0) if plan else None
                body = outer.files.get(self.path)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "timeout":
                    time.sleep(1.5)
                if body is None or fault == "404":
                    self.send_error(404)
                    return
                if fault == "500":
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/images"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def served(real_samples):
    images, rows = real_samples
    sources = [rows[0][0], rows[0][0], rows[1][0]]  # the 512 px sample (twice) and a 2048 px one
    files, planes = {}, {}
    for ext_id, src in zip(EXT_IDS, sources):
        img = read_sample(images, src)
        if img.shape[0] > 1024:
            img = cv2.resize(img, (1024, 1024), interpolation=cv2.INTER_AREA)
        folder, _, rest = ext_id.partition("_")
        for k, c in enumerate(COLORS):
            plane = img[:, :, k]
            z = np.zeros_like(plane)
            r, g, b = {"red": (plane, z, z), "green": (z, plane, z), "blue": (z, z, plane),
                       "yellow": (plane, plane, z)}[c]
            ok, buf = cv2.imencode(".jpg", np.dstack([b, g, r]), [cv2.IMWRITE_JPEG_QUALITY, 95])
            files[f"/images/{folder}/{rest}_{c}.jpg"] = buf.tobytes()
            planes[(ext_id, c)] = plane
    server = Server(files)
    yield server, planes
    server.close()


def table(tmp_path):
    p = tmp_path / "ext.csv"
    pd.DataFrame({"Id": EXT_IDS, "Target": ["13 25 0", "0", "21"]}).to_csv(p, index=False)
    return p


def run(tmp_path, server, retries):
    return download.main(["--data-dir", str(tmp_path / "data"), "--external", str(table(tmp_path)), "--base-url",
                          server.url, "--connections", "4", "--timeout", "0.5", "--retries", str(retries),
                          "--backoff", "0.01"])


def stored_files_all_decode(d):
    for p in d.iterdir():
        assert p.suffix == ".png" and not p.name.startswith("."), p  # no temporary or partial files
        assert read_channel(p, p.stem.rsplit("_", 1)[1]).ndim == 2


def test_url_scheme(tmp_path):
    assert library.external_url("http://v18.proteinatlas.org/images", "10580_1610_C1_1", "green") == \
        "http://v18.proteinatlas.org/images/10580/1610_C1_1_green.jpg"
    with pytest.raises(argparse.ArgumentTypeError, match="only http"):
        download.argument_type(library.check_address)("ftp://example.org/images")
    with pytest.raises(argparse.ArgumentTypeError, match="only http"):
        download.argument_type(library.check_address)("file:///etc")
    # the library refuses it too, whoever calls it (a notebook): a download never reads local files
    with pytest.raises(ConfigError, match="only http"):
        library.download_external(tmp_path / "t.csv", tmp_path, "file:///etc")
    with pytest.raises(ConfigError, match=r"no \{color\}"):
        library.download_full_size(tmp_path, "https://h/x/{id}.tif")
    assert not list(tmp_path.iterdir())


def test_faults_are_reported_then_completed_on_rerun(served, tmp_path):
    server, planes = served
    server.hits.clear()
    faulty = {"/images/10580/1610_C1_1_green.jpg": ["500"], "/images/10580/1610_C1_2_red.jpg": ["truncate"],
              "/images/10580/1610_C1_2_blue.jpg": ["drop"], "/images/777/88_D2_1_yellow.jpg": ["timeout"]}
    server.faults = {k: list(v) for k, v in faulty.items()}
    assert run(tmp_path, server, retries=0) == 1
    d = tmp_path / "data"
    fails = pd.read_csv(d / "download_failures.csv")
    assert sorted(fails["url"].str.replace(server.url, "/images")) == sorted(faulty)
    assert set(fails["error"].str[:8]) >= {"HTTP 500"}
    assert fails["error"].str.contains("cut at").any()
    stored_files_all_decode(d / "external")
    assert len(list((d / "external").iterdir())) == 12 - 4
    assert pd.read_csv(d / "external.csv").empty  # every sample misses a stain

    hits_before = Counter(server.hits)
    assert run(tmp_path, server, retries=2) == 0
    assert not (d / "download_failures.csv").exists()
    assert pd.read_csv(d / "external.csv")["Id"].tolist() == EXT_IDS
    stored_files_all_decode(d / "external")
    for path in server.files:  # verified files were skipped, the failed ones fetched again
        assert server.hits[path] - hits_before[path] == (1 if path in faulty else 0)
    for (ext_id, c), plane in planes.items():
        got = read_channel(d / "external" / f"{ext_id}_{c}.png", c)
        assert got.shape == plane.shape
        assert np.abs(got.astype(int) - plane).mean() < 5  # JPEG round trip
    img = read_sample(d / "external", EXT_IDS[2])
    assert img.shape == (1024, 1024, 4)


def test_retries_with_backoff_within_one_run(served, tmp_path):
    server, _ = served
    server.hits.clear()
    path = "/images/10580/1610_C1_1_blue.jpg"
    server.faults = {path: ["500", "drop", "truncate"], "/images/777/88_D2_1_red.jpg": ["404"]}
    assert run(tmp_path, server, retries=3) == 1
    assert server.hits[path] == 4
    fails = pd.read_csv(tmp_path / "data" / "download_failures.csv")
    assert fails["error"].tolist() == ["HTTP 404"]
    assert server.hits["/images/777/88_D2_1_red.jpg"] == 1  # a 404 is not retried
    assert pd.read_csv(tmp_path / "data" / "external.csv")["Id"].tolist() == EXT_IDS[:2]


def test_kaggle_without_credentials_says_how(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    r = run_script("input_prep/download.py", "--data-dir", tmp_path / "d", "--kaggle")
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1
    err = r.stderr
    assert "no Kaggle credentials" in err and os.path.join(str(tmp_path), "kaggle.json") in err


def test_the_shipped_hpav18_table_is_the_real_one():
    from hpa.data.labels import read_labels

    shipped = read_labels(HPAV18_TABLE)
    assert len(shipped) == 74606 and shipped["Id"][0] == "10580_1610_C1_1"
    real = shared_path("kaggle-hpa-2018", "HPAv18RBGY_wodpl.csv")
    assert shipped.equals(read_labels(real))


def test_the_competition_archive_is_unpacked_resumably(tmp_path):
    import zipfile

    archive = tmp_path / "c.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train.csv", "Id,Target\na,0\n")
        z.writestr("train/a_red.png", b"png bytes")
    out = tmp_path / "data"
    library.extract_archive(archive, out)
    assert (out / "train.csv").read_text() == "Id,Target\na,0\n" and (out / "train" / "a_red.png").is_file()
    (out / "train.csv").write_text("Id,Target\na,0\n")  # complete files are kept, not rewritten
    mtime = (out / "train" / "a_red.png").stat().st_mtime_ns
    library.extract_archive(archive, out)
    assert (out / "train" / "a_red.png").stat().st_mtime_ns == mtime
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(SampleError, match="unsafe member name"):
        library.extract_archive(archive, out)
    archive.write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(SampleError, match="not a complete zip archive"):
        library.extract_archive(archive, out)


def tiff_bytes(plane: np.ndarray) -> bytes:
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, plane)
    return buf.getvalue()


def test_full_size_tiffs_are_fetched_resumably_and_read_before_the_pngs(real_samples, tmp_path):
    from hpa.data.images import write_sample_png

    images, rows = real_samples
    big = read_sample(images, rows[1][0])  # a real 2048 px sample
    assert big.shape[0] == 2048
    ids = {"train": ["aaaa-1", "bbbb-2"], "test": ["cccc-3"]}
    files = {f"/full/{split}/{sid}_{c}.tif": tiff_bytes(np.ascontiguousarray(big[:, :, k] // (n + 1)))
             for split, sids in ids.items() for n, sid in enumerate(sids) for k, c in enumerate(COLORS)}
    d = tmp_path / "data"
    d.mkdir()
    pd.DataFrame({"Id": ids["train"], "Target": ["0", "25"]}).to_csv(d / "train.csv", index=False)
    pd.DataFrame({"Id": ids["test"], "Predicted": ["0"]}).to_csv(d / "sample_submission.csv", index=False)
    small = cv2.resize(big, (512, 512), interpolation=cv2.INTER_AREA)
    write_sample_png(d / "train", "aaaa-1", small)  # Kaggle's 512 px PNGs already there
    server = Server(files)
    try:
        faulty = {"/full/train/aaaa-1_green.tif": ["500"], "/full/train/bbbb-2_red.tif": ["truncate"],
                  "/full/test/cccc-3_blue.tif": ["drop"]}
        server.faults = {k: list(v) for k, v in faulty.items()}
        base = server.url.replace("/images", "/full")
        argv = ["--data-dir", str(d), "--full-size", base + "/{split}/{id}_{color}.tif", "--connections", "3",
                "--timeout", "0.5", "--backoff", "0.01", "--retries"]
        assert download.main(argv + ["0"]) == 1
        fails = pd.read_csv(d / "download_failures_full_size.csv")
        assert sorted(fails["url"].str.replace(base, "/full")) == sorted(faulty)
        assert not (d / "train" / "bbbb-2_red.tif").exists()  # the cut TIFF was never stored
        assert not [p for p in d.rglob("*") if p.name.startswith(".")]  # no temporary files left
        hits = Counter(server.hits)
        assert download.main(argv + ["2"]) == 0
        assert not (d / "download_failures_full_size.csv").exists()
        for path, body in files.items():
            split, name = path.split("/")[2:]
            assert (d / split / name).read_bytes() == body  # stored as served
            assert server.hits[path] - hits[path] == (1 if path in faulty else 0)  # stored ones were skipped
    finally:
        server.close()
    got = read_sample(d / "train", "aaaa-1")  # the TIFF, not the 512 px PNG beside it
    assert got.shape == (2048, 2048, 4) and np.array_equal(got, big)
    assert read_sample(d / "test", "cccc-3").shape == (2048, 2048, 4)


def test_full_size_address_needs_id_and_color(tmp_path):
    with pytest.raises(argparse.ArgumentTypeError, match=r"no \{color\}"):
        download.argument_type(library.check_template)("https://h/x/{id}.tif")
    with pytest.raises(argparse.ArgumentTypeError, match="may be filled in"):
        download.argument_type(library.check_template)("https://h/{id}_{color}_{stain}.tif")
    with pytest.raises(argparse.ArgumentTypeError, match="only http"):
        download.argument_type(library.check_template)("file:///{id}_{color}.tif")
    from hpa.errors import LabelError

    with pytest.raises(LabelError, match="run --kaggle first"):
        library.download_full_size(tmp_path, "https://h/{id}_{color}.tif")
