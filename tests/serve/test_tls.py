"""HTTPS for `lmtune serve` and `lmtune ui` (uvicorn's TLS), with a certificate made in the test by trustme.

The official `openai` client and headless Chromium talk to the servers over HTTPS; plain HTTP to
the TLS port, and a client that does not trust the certificate, get no answer. A server other
machines can reach is refused without TLS and a key, unless --insecure.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from pathlib import Path

import httpx
import pytest

from lmtune.cli import main
from lmtune.errors import LmtuneError
from lmtune.serve.tls import check_listening
from servers import Server, UiServer


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict[str, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM files."""
    import trustme

    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": root / "ca.pem", "cert": root / "server.pem", "key": root / "server.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    with files["cert"].open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(root / "other.key"))
    files["other_key"] = root / "other.key"
    return files


def tls_args(tls: dict[str, Path]) -> list[str]:
    return ["--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"])]


def test_the_openai_client_chats_over_https_and_plain_http_gets_nothing(chat_run, tls):
    import openai

    server = Server(chat_run, "--api-key", "secret", *tls_args(tls), ca=tls["ca"])
    try:
        assert server.url.startswith("https://")
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="secret", max_retries=0,
                               http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(tls["ca"])), timeout=60))
        reply = client.chat.completions.create(model=client.models.list().data[0].id,
                                               messages=[{"role": "user", "content": "who are you ?"}], max_tokens=8)
        assert reply.choices[0].message.content
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port: no HTTP answer
            httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a client that does not trust it
            httpx.get(f"{server.url}/health", timeout=5)
        assert "https://127.0.0.1" in server.output()
    finally:
        server.stop()


def spki_hash(cert_file: Path) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list takes: the base64 SHA-256 of the certificate's public key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_the_web_app_opens_in_the_browser_over_https(browser, workspace, tls):
    from webapp import chromium_path

    server = UiServer(workspace, *tls_args(tls), ca=tls["ca"])
    try:
        # A Chromium of the test session's Playwright that trusts this one certificate's key (as it would an
        # installed CA), nothing more.
        trusting = browser.browser_type.launch(executable_path=chromium_path(), args=[
            "--no-sandbox", "--disable-gpu", f"--ignore-certificate-errors-spki-list={spki_hash(tls['cert'])}"])
        try:
            page = trusting.new_page()
            response = page.goto(f"{server.url}/")
            assert response is not None and response.ok and page.url.startswith("https://127.0.0.1")
            page.locator("nav").first.wait_for()
            assert page.evaluate("location.protocol") == "https:"
        finally:
            trusting.close()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/api/workspace", timeout=5)
    finally:
        server.stop()


@pytest.mark.parametrize(("args", "says"), [
    (["serve", "some-model", "--host", "0.0.0.0"], "without TLS (--ssl-certfile and --ssl-keyfile) and an API key"),
    (["serve", "some-model", "--host", "0.0.0.0", "--api-key", "k"], "without TLS"),
    (["ui", "--host", "0.0.0.0"], "without TLS"),
    (["serve", "some-model", "--ssl-certfile", "CERT"], "--ssl-certfile was given without --ssl-keyfile"),
    (["serve", "some-model", "--ssl-certfile", "CERT", "--ssl-keyfile", "OTHER_KEY"], "cannot use --ssl-certfile"),
    (["serve", "some-model", "--ssl-certfile", "CERT", "--ssl-keyfile", "MISSING"], "no such file"),
])
def test_a_server_others_can_reach_needs_tls_and_a_key(tls, tmp_path, capsys, args, says):
    names = {"CERT": str(tls["cert"]), "OTHER_KEY": str(tls["other_key"]), "MISSING": str(tmp_path / "missing.key")}
    argv = [names.get(a, a) for a in args]
    if argv[0] == "ui":
        argv += ["--workspace", str(tmp_path / "ws")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "ws").exists()


def test_insecure_or_tls_with_a_key_may_listen_for_other_machines(tls):
    cert, key = str(tls["cert"]), str(tls["key"])
    assert check_listening("0.0.0.0", None, None, True, False, "an API key").scheme == "http"
    listening = check_listening("0.0.0.0", cert, key, False, True, "an API key")
    assert listening.scheme == "https" and listening.uvicorn_options() == {"ssl_certfile": cert, "ssl_keyfile": key}
    with pytest.raises(LmtuneError, match="an API key"):
        check_listening("0.0.0.0", cert, key, False, False, "an API key")
    assert check_listening("127.0.0.1", None, None, False, False, "an API key").scheme == "http"
