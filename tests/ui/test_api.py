"""The web app's API through httpx against a live `lmtune ui`: workspace confinement, the token, uploads, checks."""

from __future__ import annotations

import time

import httpx
import pytest

from lmtune.config import load_config
from lmtune.data.readers import read_table
from lmtune.errors import DataError
from servers import UiServer


@pytest.fixture
def client(ui):
    with httpx.Client(base_url=ui.url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("path", ["../outside.csv", "/etc/passwd", "models/../../x.csv", "a/../../etc/hosts"])
def test_paths_outside_the_workspace_are_refused_everywhere(client, workspace, path):
    (workspace.parent / "outside.csv").write_text("text,label\nsecret,pos\n")
    for method, url, params in [("GET", "/api/data", {"path": path}), ("GET", "/api/file", {"path": path}),
                                ("GET", "/api/run", {"path": path}), ("POST", "/api/run/resume", {"path": path}),
                                ("GET", "/api/run/download", {"path": path}), ("GET", "/api/search", {"path": path}),
                                ("POST", "/api/search/stop", {"path": path}), ("POST", "/api/search/more", {"path": path, "n_trials": 1})]:
        r = client.request(method, url, params=params)
        assert r.status_code == 403 and "outside the workspace" in r.json()["error"], (url, r.text)
        assert "secret" not in r.text and "root:" not in r.text


def test_a_symlink_out_of_the_workspace_is_refused(client, workspace, tmp_path):
    (tmp_path / "secret.csv").write_text("text,label\nsecret,pos\n")
    (workspace / "link.csv").symlink_to(tmp_path / "secret.csv")
    try:
        r = client.get("/api/data", params={"path": "link.csv"})
        assert r.status_code == 403 and "secret" not in r.text
    finally:
        (workspace / "link.csv").unlink()


def test_an_upload_name_cannot_leave_the_uploads_folder(client, workspace):
    r = client.put("/api/upload", params={"name": "../../escape.csv"}, content=b"text,label\nhi,pos\n")
    assert r.status_code == 200 and r.json()["path"] == "uploads/escape.csv"
    assert (workspace / "uploads" / "escape.csv").is_file() and not (workspace.parent / "escape.csv").exists()
    assert client.put("/api/upload", params={"name": "run.sh"}, content=b"rm -rf /").status_code == 400


def test_uploads_over_the_limit_are_refused_and_leave_nothing(workspace):
    server = UiServer(workspace, "--max-upload-bytes", "1000")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.put("/api/upload", params={"name": "big.csv"}, content=b"text,label\n" + b"x,pos\n" * 400)
            assert r.status_code == 413 and "1,000" in r.json()["error"]
            streamed = c.put("/api/upload", params={"name": "big2.csv"}, content=iter([b"text,label\n"] + [b"x,pos\n" * 50] * 10))
            assert streamed.status_code == 413
        assert not list((workspace / "uploads").glob("big*")) and not list((workspace / "uploads").glob(".*part"))
    finally:
        server.stop()


def test_a_bad_data_file_gives_the_message_the_cli_gives(client, workspace):
    r = client.get("/api/data", params={"path": "broken.csv"})
    with pytest.raises(DataError) as cli:
        read_table(str(workspace / "broken.csv"))
    assert r.status_code == 400
    assert r.json()["error"] == str(cli.value) and "line 3" in str(cli.value)


def test_data_summary_counts_labels_and_truncated_rows(client):
    info = client.get("/api/data", params={"path": "skewed.csv", "model": "models/bert", "max_length": 6}).json()
    assert info["rows"] == 90 and info["columns"] == ["text", "label"]
    assert info["labels"]["counts"] == {"pos": 80, "neg": 10} and "class_weights: balanced" in info["labels"]["warning"]
    lengths = info["lengths"]
    assert sum(lengths["counts"]) == 90 and 0 < lengths["truncated"] < 90  # sentences of 3-10 words, plus [CLS] and [SEP]


def test_the_model_for_token_lengths_may_be_an_absolute_path_outside_the_workspace(client, tiny_models):
    # models installed elsewhere (a pip package, the hub cache) are read where they are, as training reads them
    info = client.get("/api/data", params={"path": "train.csv", "model": str(tiny_models["bert"]), "max_length": 6}).json()
    assert sum(info["lengths"]["counts"]) == 240


def test_config_problems_name_the_key_as_the_cli_does(client, workspace, tmp_path):
    bad = {"task": "classification", "model": {"name_or_path": "m"}, "data": {"train": "t.csv"}, "train": {"epochs": 0, "nope": 1}}
    problems = client.post("/api/config/check", json={"config": bad}).json()["problems"]
    assert {p["key"] for p in problems} == {"train.epochs", "train.nope"}
    (tmp_path / "bad.yaml").write_text("task: classification\nmodel: {name_or_path: m}\ndata: {train: t.csv}\ntrain: {epochs: 0, nope: 1}\n")
    with pytest.raises(Exception) as cli:
        load_config(tmp_path / "bad.yaml")
    assert all(p["message"] in str(cli.value) for p in problems)
    assert client.post("/api/config/check", json={"yaml": "train: [unclosed"}).status_code == 422


def test_launch_refuses_an_invalid_config_and_a_used_folder(client, workspace):
    r = client.post("/api/runs", json={"run": "runs/never", "config": {"task": "classification", "train": {"epochs": -1}}})
    assert r.status_code == 422 and not (workspace / "runs" / "never").exists()
    (workspace / "used").mkdir(exist_ok=True)
    (workspace / "used" / "notes.txt").write_text("mine")
    r = client.post("/api/runs", json={"run": "used", "config": {"task": "classification"}})
    assert r.status_code == 409 and (workspace / "used" / "notes.txt").read_text() == "mine"
    assert client.post("/api/runs", json={"run": "../away", "config": {}}).status_code == 403


def test_another_host_header_is_refused(client):
    assert client.get("/api/workspace", headers={"Host": "attacker.example"}).status_code == 403
    assert client.get("/api/workspace", headers={"Host": "attacker.example:8000"}).status_code == 403
    for local in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "[::1]"):
        assert client.get("/api/workspace", headers={"Host": local}).status_code == 200, local


def test_the_token_guards_every_page_and_call(workspace):
    server = UiServer(workspace, env={"LMTUNE_UI_TOKEN": "s3cret-token"})
    try:
        assert "?token=s3cret-token" in _wait_for_link(server)
        for path in ("/", "/api/workspace", "/api/runs", "/static/app.js", "/api/data?path=train.csv"):
            assert httpx.get(server.url + path).status_code == 401, path
            assert httpx.get(server.url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(server.url + "/?token=wrong").status_code == 401
        assert httpx.get(server.url + "/api/workspace", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        with httpx.Client(base_url=server.url, follow_redirects=True) as c:  # the printed link sets a cookie
            page = c.get("/?token=s3cret-token")
            assert page.status_code == 200 and "lmtune" in page.text and "token" not in str(page.url)
            assert c.get("/api/workspace").status_code == 200
    finally:
        server.stop()


def _wait_for_link(server: UiServer) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "open http" not in server.output():
        time.sleep(0.1)
    return server.output()


def test_the_report_is_rendered_with_user_html_escaped_and_plots_inside_the_run_only(tmp_path):
    from lmtune.run_dir import RunDir
    from lmtune.ui.report_html import report_html
    from lmtune.ui.workspace import Workspace

    run = RunDir(tmp_path / "runs" / "r")
    run.plots.mkdir(parents=True)
    (run.plots / "loss.png").write_bytes(b"\x89PNG")
    (tmp_path / "secret.png").write_bytes(b"\x89PNG")
    run.report_file.write_text("# Report\n\nA reply: <script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                               "![Loss](plots/loss.png)\n\n![Out](../../secret.png)\n")
    html = report_html(Workspace(tmp_path), run)
    assert "<h1>Report</h1>" in html and "<table>" in html and "<script>" not in html and "&lt;script&gt;" in html
    assert 'src="/api/file?path=runs%2Fr%2Fplots%2Floss.png"' in html and "secret" not in html
    assert report_html(Workspace(tmp_path), RunDir(tmp_path / "runs" / "none")) is None
