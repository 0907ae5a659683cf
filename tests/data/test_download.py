"""`metaloop data`: the catalogue's sums match the data as distributed, and downloads (from a local HTTP server)
are all or nothing: a wrong sum, an HTML page, an HTTP error, a cut connection or a full disk leave nothing."""

from __future__ import annotations

import errno
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

import metaloop.data.download as datasets
from metaloop.cli import main
from metaloop.data import data_root
from metaloop.data.download import DATASETS, Dataset, Remote, check_file, download, status
from metaloop.errors import MetaloopError


def test_the_catalogue_matches_the_data_root():
    """Every file the catalogue lists, as it lies under this machine's data root, has the listed sum."""
    try:
        root = data_root()
    except MetaloopError:
        pytest.skip("no data root here")
    checked = 0
    for dataset in DATASETS.values():
        for remote in dataset.files:
            if (root / remote.path).is_file():
                assert check_file(root / remote.path, remote) is None, remote.path
                checked += 1
    assert checked >= 15


class _Handler(http.server.SimpleHTTPRequestHandler):
    cut: set[str] = set()

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802
        if self.path.lstrip("/") in self.cut:  # promise the whole file, send half, hang up
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    files = tmp_path / "served"
    files.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(files), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield files, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    _Handler.cut = set()


def toy(files: Path, base: str, contents: dict[str, bytes], sums: dict[str, bytes] | None = None) -> Dataset:
    """A dataset of the served files, its sums those of ``sums`` (default: of the contents)."""
    remotes = []
    for name, data in contents.items():
        (files / name).write_bytes(data)
        expected = (sums or contents)[name]
        remotes.append(Remote(f"toy/{name}", f"{base}/{name}", len(expected), hashlib.sha256(expected).hexdigest()))
    return Dataset("toy", "a test dataset", "none", tuple(remotes))


@pytest.fixture
def catalogue(monkeypatch):
    table = {}
    monkeypatch.setattr(datasets, "DATASETS", table)
    return table


def nothing_left(root: Path) -> bool:
    return not any(p for p in root.rglob("*") if p.is_file())


def test_download_checks_every_file_then_moves_them_into_place(server, catalogue, tmp_path, capsys):
    files, base = server
    catalogue["toy"] = toy(files, base, {"a.json": b'{"x": 1}', "b.txt": b"hello\n" * 1000})
    root = tmp_path / "root"
    assert status("toy", root) == "missing"
    written = download("toy", root)
    assert sorted(p.name for p in written) == ["a.json", "b.txt"] and status("toy", root) == "present"
    assert (root / "toy" / "b.txt").read_bytes() == b"hello\n" * 1000
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert download("toy", root) == []  # present: nothing fetched again
    code = main(["data", "download", "toy", "--to", str(root)])
    assert code == 0 and "already present" in capsys.readouterr().out


@pytest.mark.parametrize("failure", ["wrong-sum", "html", "404", "cut", "disk-full"])
def test_a_failed_download_leaves_nothing(server, catalogue, tmp_path, monkeypatch, capsys, failure):
    files, base = server
    good = {"a.json": b'{"x": 1}', "b.txt": b"hello\n" * 1000}
    if failure == "wrong-sum":
        catalogue["toy"] = toy(files, base, good, {"a.json": b'{"x": 1}', "b.txt": b"hellO\n" * 1000})
        needle = "SHA-256 differs"
    elif failure == "html":
        catalogue["toy"] = toy(files, base, {**good, "b.txt": b"<!DOCTYPE html><html>rate limited</html>"}, good)
        needle = "an HTML page"
    elif failure == "404":
        catalogue["toy"] = toy(files, base, good)
        (files / "b.txt").unlink()
        needle = "HTTP 404"
    elif failure == "cut":
        catalogue["toy"] = toy(files, base, good)
        _Handler.cut = {"b.txt"}
        needle = "b.txt"
    else:
        catalogue["toy"] = toy(files, base, good)

        def full(src, dst, length=0):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(datasets, "copyfileobj", full)
        needle = "No space left on device"
    root = tmp_path / "root"
    code = main(["data", "download", "toy", "--to", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert nothing_left(root)


def test_the_datasets_that_cannot_be_downloaded_say_how(capsys):
    assert main(["data", "download", "hwu64", "--to", "/nonexistent"]) == 2
    assert "cannot be downloaded by metaloop" in capsys.readouterr().err
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in DATASETS)


@pytest.mark.parametrize(("algo", "benchmark", "hint"), [
    ("protonet", "omniglot-5w1s", "`metaloop data download omniglot` gets it"),
    ("protonet", "miniimagenet-5w1s", "`metaloop data download miniimagenet-splits` gets it"),
    ("maml", "lm-shakespeare", "`metaloop data download tinyshakespeare` gets it"),
    ("protonet", "clinc150-5w1s", "`metaloop data download clinc150` gets it"),
    ("protonet", "hwu64-5w1s", "hwu64 cannot be downloaded as it is used here; `metaloop data` says how to get it"),
])
def test_a_missing_dataset_says_how_to_get_it(algo, benchmark, hint, tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("train", "--algo", algo, "--benchmark", benchmark, "--out", tmp_path / "r", "--quiet",
                       "--set", f"data={empty}")
    assert code == 2 and err.count("\n") == 1 and hint in err, err
    assert not (tmp_path / "r").exists()
