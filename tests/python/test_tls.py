"""TLS on the HTTP and gRPC ports, seen from unmodified tritonclient and curl.

Certificates are made at test time with the `openssl` command line (nothing is committed): a
server CA and the server's certificate (localhost, 127.0.0.1), a client CA and a client
certificate, and a stranger CA with its own client. Two servers are started, configured through
the environment as a container would be (FERROSERVE_TLS__CERT_FILE, ...): one with TLS only, one
that also requires client certificates (mTLS). Each test checks an exact inference or a refusal,
and that the server still answers afterwards.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import gevent.ssl
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import load_reference, read_log, start_server
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("curl") is None, reason="needs the openssl and curl commands"
)

MODEL = "iris"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(dir: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=dir)


def _leaf(dir: Path, name: str, ca: str, usage: str) -> None:
    ext = dir / f"{name}.ext"
    ext.write_text(f"subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=dir)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=dir)


@pytest.fixture(scope="module")
def pki():
    dir = Path(tempfile.mkdtemp(prefix="ferroserve-tls-"))
    _ca(dir, "server-ca")
    _leaf(dir, "server", "server-ca", "serverAuth")
    _ca(dir, "client-ca")
    _leaf(dir, "client", "client-ca", "clientAuth")
    _ca(dir, "stranger-ca")
    _leaf(dir, "stranger", "stranger-ca", "clientAuth")
    yield dir
    shutil.rmtree(dir, ignore_errors=True)


def context_factory(pki: Path, client: str | None = None):
    """An SSLContext factory for tritonclient.http trusting the server CA, presenting `client`."""

    def make():
        ctx = gevent.ssl.create_default_context(cafile=str(pki / "server-ca.pem"))
        # geventhttpclient wraps without a server name and matches the host itself after the
        # handshake (unless insecure=True), so the context must not check it.
        ctx.check_hostname = False
        if client:
            ctx.load_cert_chain(str(pki / f"{client}.pem"), str(pki / f"{client}.key"))
        return ctx

    return make


def _tls_server(pki: Path, mtls: bool):
    log_dir = Path(tempfile.mkdtemp(prefix="ferroserve-tls-e2e-"))
    env = {
        "FERROSERVE_TLS__CERT_FILE": str(pki / "server.pem"),
        "FERROSERVE_TLS__KEY_FILE": str(pki / "server.key"),
        "FERROSERVE_SHUTDOWN__DRAIN_DELAY": "0",
    }
    ready = ssl.create_default_context(cafile=str(pki / "server-ca.pem"))
    if mtls:
        env["FERROSERVE_TLS__CLIENT_CA_FILE"] = str(pki / "client-ca.pem")
        ready.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    srv = start_server(log_dir / "server.log", env_overrides=env, https_context=ready)
    return srv, log_dir


def _stop(srv, log_dir: Path) -> None:
    srv.process.terminate()
    srv.process.wait(timeout=15)
    log = read_log(srv.log_path)
    assert "panicked" not in log, log
    shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(pki):
    srv, log_dir = _tls_server(pki, mtls=False)
    yield srv
    _stop(srv, log_dir)


@pytest.fixture(scope="module")
def mtls_server(pki):
    srv, log_dir = _tls_server(pki, mtls=True)
    yield srv
    _stop(srv, log_dir)


def _iris():
    ref = load_reference(MODEL)
    t = ref["inputs"]["input"]
    data = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
    want = np.asarray(ref["outputs"]["label"]["data"], dtype=np.int64).reshape(ref["outputs"]["label"]["shape"])
    return data, want


def assert_http_iris_exact(client: httpclient.InferenceServerClient) -> None:
    data, want = _iris()
    inp = httpclient.InferInput("input", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    result = client.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("label")])
    np.testing.assert_array_equal(result.as_numpy("label"), want)


def assert_grpc_iris_exact(client: grpcclient.InferenceServerClient) -> None:
    data, want = _iris()
    inp = grpcclient.InferInput("input", list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    result = client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("label")])
    np.testing.assert_array_equal(result.as_numpy("label"), want)


def http_client(srv, pki: Path, client: str | None = None) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        srv.http_url, ssl=True, ssl_context_factory=context_factory(pki, client), network_timeout=10
    )


def grpc_client(srv, pki: Path, client: str | None = None) -> grpcclient.InferenceServerClient:
    auth = {}
    if client:
        auth = {"private_key": str(pki / f"{client}.key"), "certificate_chain": str(pki / f"{client}.pem")}
    return grpcclient.InferenceServerClient(
        srv.grpc_url, ssl=True, root_certificates=str(pki / "server-ca.pem"), **auth
    )


def curl(srv, pki: Path, path: str, *extra: str) -> subprocess.CompletedProcess:
    """curl --cacert: the body, then a line with the status and the HTTP version."""
    url = f"https://{srv.http_url}{path}"
    cmd = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki / "server-ca.pem"), "-o", "-",
           "-w", "\n%{http_code} %{http_version}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_http_client_with_ssl_is_served_an_exact_inference(tls_server, pki):
    client = http_client(tls_server, pki)
    assert client.is_server_live()
    assert_http_iris_exact(client)


def test_http_client_not_trusting_the_server_ca_is_refused(tls_server, pki):
    def untrusting():
        ctx = gevent.ssl.create_default_context(cafile=str(pki / "stranger-ca.pem"))
        ctx.check_hostname = False
        return ctx

    client = httpclient.InferenceServerClient(tls_server.http_url, ssl=True, ssl_context_factory=untrusting)
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        client.is_server_live()
    assert http_client(tls_server, pki).is_server_live()


def test_grpc_client_with_ssl_is_served_an_exact_inference(tls_server, pki):
    client = grpc_client(tls_server, pki)
    assert client.is_server_live()
    assert_grpc_iris_exact(client)


def test_curl_with_cacert_gets_health_and_http2(tls_server, pki):
    done = curl(tls_server, pki, "/v2/health/ready", "--http2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n200 2"), done.stdout
    over_http1 = curl(tls_server, pki, "/v2/health/ready", "--http1.1")
    assert over_http1.stdout.endswith("\n200 1.1"), over_http1


def test_curl_without_the_ca_is_refused(tls_server, pki):
    done = subprocess.run(["curl", "-sS", "--max-time", "10", f"https://{tls_server.http_url}/v2/health/live"],
                          capture_output=True, text=True)
    assert done.returncode == 60, done  # SSL certificate problem: unable to get local issuer
    assert curl(tls_server, pki, "/v2/health/live").stdout.endswith("\n200 2")


def test_mtls_http_client_with_a_client_certificate_is_served(mtls_server, pki):
    assert_http_iris_exact(http_client(mtls_server, pki, client="client"))


def test_mtls_grpc_client_with_a_client_certificate_is_served(mtls_server, pki):
    client = grpc_client(mtls_server, pki, client="client")
    assert client.is_server_ready()
    assert_grpc_iris_exact(client)


def test_mtls_grpc_client_without_a_certificate_is_refused(mtls_server, pki):
    with pytest.raises(InferenceServerException) as err:
        grpc_client(mtls_server, pki).is_server_live()
    assert "UNAVAILABLE" in str(err.value.status()), err.value
    assert grpc_client(mtls_server, pki, client="client").is_server_live()


def test_mtls_grpc_client_with_a_certificate_from_another_ca_is_refused(mtls_server, pki):
    with pytest.raises(InferenceServerException) as err:
        grpc_client(mtls_server, pki, client="stranger").is_server_live()
    assert "UNAVAILABLE" in str(err.value.status()), err.value
    assert_grpc_iris_exact(grpc_client(mtls_server, pki, client="client"))


def test_mtls_http_client_with_a_certificate_from_another_ca_is_refused(mtls_server, pki):
    with pytest.raises((ssl.SSLError, ConnectionError, InferenceServerException)):
        http_client(mtls_server, pki, client="stranger").is_server_live()
    assert http_client(mtls_server, pki, client="client").is_server_live()


def test_mtls_curl_needs_a_client_certificate(mtls_server, pki):
    refused = curl(mtls_server, pki, "/v2/health/live")
    assert refused.returncode != 0, refused
    served = curl(mtls_server, pki, "/v2/health/live", "--cert", str(pki / "client.pem"), "--key",
                  str(pki / "client.key"))
    assert served.returncode == 0 and served.stdout.endswith("\n200 2"), served
