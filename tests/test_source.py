"""The loader: cache, real HTTP downloads from a server on 127.0.0.1, and bad inputs."""

import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest

from atlas.cli import main
from atlas.model.source import LABELS_NAME, PB_NAME, ZIP_NAME, resolve
from atlas.model.synthetic import build_graph_def


def make_zip(with_pb: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        if with_pb:
            zf.writestr(PB_NAME, build_graph_def(0.125).SerializeToString())
        zf.writestr(LABELS_NAME, "dummy\nkit fox\n")
    return buffer.getvalue()


class Server:
    """A real HTTP server on 127.0.0.1 that answers with a body, a status and a claimed length."""

    def __init__(self, body: bytes = b"", status: int = 200, claimed_length: int | None = None):
        self.body, self.status, self.claimed = body, status, claimed_length
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Length", str(outer.claimed or len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{ZIP_NAME}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(monkeypatch):
    servers = []

    def start(body: bytes, status: int = 200, claimed_length: int | None = None, sha: bytes | None = None):
        server = Server(body, status, claimed_length)
        servers.append(server)
        monkeypatch.setenv("ATLAS_MODEL_URL", server.url)
        monkeypatch.setenv("ATLAS_MODEL_SHA256", hashlib.sha256(sha if sha is not None else body).hexdigest())
        return server

    yield start
    for server in servers:
        server.close()


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_download_verify_extract_then_cache(serve, isolated_cache, capsys):
    server = serve(make_zip())
    assert main(["layers", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_layers"] == 59
    assert files_in(isolated_cache) == sorted([LABELS_NAME, PB_NAME, ZIP_NAME])
    assert main(["layers", "--format", "json"]) == 0  # second run: from the cache, no request
    assert server.hits == 1


@pytest.mark.parametrize("case", ["checksum", "truncated", "http404", "refused"])
def test_download_failures_are_one_line_and_leave_nothing(case, serve, isolated_cache, capsys, monkeypatch):
    body = make_zip()
    if case == "checksum":
        serve(body, sha=b"something else")
    elif case == "truncated":
        serve(body[: len(body) // 2], claimed_length=len(body), sha=body)
    elif case == "http404":
        serve(b"not found", status=404)
    else:
        server = serve(body)
        server.close()  # nothing listens on that port any more
    assert main(["layers"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "127.0.0.1" in err and str(isolated_cache / ZIP_NAME) in err and "by hand" in err
    assert {"checksum": "checksum mismatch", "truncated": "stopped after", "http404": "HTTP 404",
            "refused": "refused"}[case] in err
    assert files_in(isolated_cache) == []


def test_local_pb_and_zip_paths(tmp_path, isolated_cache):
    pb = tmp_path / "g.pb"
    pb.write_bytes(build_graph_def(0.125).SerializeToString())
    assert resolve(str(pb)).pb_path == pb.resolve()
    archive = tmp_path / "m.zip"
    archive.write_bytes(make_zip())
    assert main(["layers", "--model", str(archive), "--format", "csv"]) == 0
    assert files_in(isolated_cache) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["g.pb", "m.zip"]


@pytest.mark.parametrize("case,needle", [
    ("unknown", "unknown --model value"),
    ("missing", "model file not found"),
    ("notgraph", "is not a TensorFlow GraphDef"),
    ("noconv", "no Conv2D"),
    ("nopb", "holds no .pb"),
    ("badzip", "not a readable zip"),
    ("badscale", "bad synthetic scale"),
])
def test_bad_model_input(case, needle, tmp_path, isolated_cache, capsys):
    spec = {"unknown": "googlenet", "missing": str(tmp_path / "nope.pb"), "badscale": "synthetic:7"}.get(case)
    if case == "notgraph":
        spec = str(tmp_path / "photo.pb")
        Path(spec).write_bytes(b"\xff\xd8\xff\xe0 this is a jpeg, not a graph" * 10)
    elif case == "noconv":
        graph = build_graph_def(0.125)
        keep = [n for n in graph.node if n.op in ("Placeholder",)]
        del graph.node[:]
        graph.node.extend(keep)
        spec = str(tmp_path / "noconv.pb")
        Path(spec).write_bytes(graph.SerializeToString())
    elif case == "nopb":
        spec = str(tmp_path / "empty.zip")
        Path(spec).write_bytes(make_zip(with_pb=False))
    elif case == "badzip":
        spec = str(tmp_path / "cut.zip")
        Path(spec).write_bytes(make_zip()[:1000])
    assert main(["layers", "--model", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert files_in(isolated_cache) == []


def test_env_var_sets_default_model(monkeypatch, capsys):
    monkeypatch.setenv("ATLAS_MODEL", "synthetic:0.125")
    assert main(["layers", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"][0]["channels"] == 8
