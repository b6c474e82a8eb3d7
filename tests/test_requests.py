"""Request options reach a real server as sent; ${VAR} read at check time; a missing one is a
monitor failure; a bearer token never shows (DESIGN.md section 12, issue 19).

Real parts: an echo server on 127.0.0.1 that records every request it receives (HTTP, and
HTTPS requiring a client certificate from a test CA), the real `sitewatch` command, PostgreSQL,
and one `sitewatch run` for what only the consumers do.
"""

import datetime
import http.server
import json
import ssl
import threading
import uuid

import pytest

from tests.conftest import cli_for, count
from tests.conftest_web import web_factory as web_factory  # noqa: F401  (fixture)
from tests.test_run import scalar, wait_until
from tests.test_run import sitewatch as sitewatch  # noqa: F401  (fixture)

TOKEN = "tok-9d2f61b0c3e84a57"       # a bearer token that must never show
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class _Echo(http.server.BaseHTTPRequestHandler):
    """Records (method, path, headers, body, client cert subject) under the path, answers 200;
    /loop/... redirects to a path holding the request's bearer token, for ever (an error that
    quotes the token)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        subject = dict(item for rdn in cert["subject"] for item in rdn) if cert else None
        self.server.seen.setdefault(self.path.split("?")[0], []).append({
            "method": self.command, "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body, "client_cn": subject.get("commonName") if subject else None})
        if self.path.startswith("/loop/"):
            token = (self.headers.get("Authorization") or "").partition(" ")[2]
            self.send_response(302)
            self.send_header("Location", f"/loop/{token}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context=None):
        super().__init__(("127.0.0.1", 0), _Echo)
        self.seen = {}
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        scheme = "https" if context else "http"
        self.base = f"{scheme}://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def path(self, what: str) -> tuple[str, str]:
        """A fresh (path, URL) for one test."""
        path = f"/{what}/{uuid.uuid4().hex[:8]}"
        return path, self.base + path


@pytest.fixture(scope="module")
def echo():
    server = _Server()
    yield server
    server.shutdown()


def _certificates(directory):
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(cn, issuer_name, issuer_key, key, ca=False, san=None):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(issuer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name, cert, key):
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return str(directory / f"{name}.pem"), str(directory / f"{name}.key")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sitewatch test CA")])
    ca = issue("sitewatch test CA", ca_name, ca_key, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    paths = {"ca": write("ca", ca, ca_key)}
    paths["server"] = write("server", issue("127.0.0.1", ca_name, ca_key, server_key,
                                            san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), server_key)
    paths["client"] = write("client", issue("sitewatch-probe", ca_name, ca_key, client_key), client_key)
    return paths


@pytest.fixture(scope="module")
def mtls(tmp_path_factory):
    """An HTTPS echo server that requires a client certificate signed by the test CA."""
    paths = _certificates(tmp_path_factory.mktemp("mtls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*paths["server"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(paths["ca"][0])
    server = _Server(context)
    server.paths = paths
    yield server
    server.shutdown()


@pytest.fixture(params=["curl", "urllib3"])
def check(tmp_path, request):
    """`sitewatch check URL ... --output-json` -> (exit code, outcome), with each engine (no
    database: `check` opens none)."""
    cli = cli_for(tmp_path, "postgresql://nobody@127.0.0.1:1/none")

    def run(url, *args, env=None):
        return _check(cli, url, *args, env={**(env or {}), "SITEWATCH_CHECK__ENGINE": request.param})
    return run


def _check(cli, url, *args, env=None):
    result = cli("check", url, *args, "--output-json", env=env)
    assert result.returncode in (0, 1), (result.returncode, result.stdout, result.stderr)
    return result.returncode, json.loads(result.stdout)


# --- each option reaches the server as sent ---------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_sent(check, echo, method):
    path, url = echo.path("method")
    code, outcome = check(url, "--method", method.lower())
    assert code == 0 and outcome["ok"], outcome
    assert [seen["method"] for seen in echo.seen[path]] == [method]


def test_headers_are_sent_with_variables_read_from_the_environment(check, echo):
    path, url = echo.path("headers")
    code, outcome = check(url, "--header", "X-Tenant: acme", "--header", "X-Api-Key: key-${API_KEY}",
                          "--header", "Accept: application/json", env={"API_KEY": "from-env-42"})
    assert code == 0, outcome
    headers = echo.seen[path][0]["headers"]
    assert headers["x-tenant"] == "acme"
    assert headers["x-api-key"] == "key-from-env-42"
    assert headers["accept"] == "application/json"


def test_a_raw_body_and_a_body_file_are_sent_as_they_are(check, echo, tmp_path):
    path, url = echo.path("body")
    check(url, "--method", "POST", "--body", "name=${WHO}&x=1", env={"WHO": "ann"})
    seen = echo.seen[path][0]
    assert seen["body"] == b"name=ann&x=1"
    assert "json" not in seen["headers"].get("content-type", "")

    body_file = tmp_path / "payload.bin"
    body_file.write_bytes(bytes(range(256)))
    path, url = echo.path("file")
    check(url, "--method", "PUT", "--body", f"@{body_file}")
    assert echo.seen[path][0]["body"] == bytes(range(256))


def test_a_json_body_sets_its_content_type_a_graphql_query(check, echo):
    path, url = echo.path("graphql")
    query = '{"query": "query { viewer { login } }", "variables": {"token": "${GH_TOKEN}"}}'
    code, _ = check(url, "--method", "POST", "--json", query, env={"GH_TOKEN": "ghp_x"})
    seen = echo.seen[path][0]
    assert seen["headers"]["content-type"] == "application/json"
    assert json.loads(seen["body"]) == {"query": "query { viewer { login } }", "variables": {"token": "ghp_x"}}

    # A Content-Type of the user's own wins.
    path, url = echo.path("graphql-ct")
    check(url, "--method", "POST", "--json", "{}", "--header", "Content-Type: application/graphql+json")
    assert echo.seen[path][0]["headers"]["content-type"] == "application/graphql+json"


def test_bearer_sends_an_authorization_header(check, echo):
    path, url = echo.path("bearer")
    check(url, "--bearer", "${SESSION}", env={"SESSION": TOKEN})
    assert echo.seen[path][0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_ip_version(check, echo):
    path, url = echo.path("ipv4")
    code, outcome = check(url, "--ip-version", "4")
    assert code == 0 and len(echo.seen[path]) == 1, outcome
    path, url = echo.path("ipv6")
    code, outcome = check(url, "--ip-version", "6")      # 127.0.0.1 has no IPv6 address
    assert code == 1 and outcome["error_kind"] in ("dns", "connect"), outcome
    assert path not in echo.seen


def test_client_certificate_mtls(check, mtls):
    cert, key = mtls.paths["client"]
    path, url = mtls.path("mtls")
    code, outcome = check(url, "--no-verify-tls")
    assert code == 1 and outcome["error_kind"] in ("tls", "protocol", "connect"), outcome
    assert path not in mtls.seen                            # refused during the handshake

    code, outcome = check(url, "--no-verify-tls", "--client-cert", cert, "--client-key", key)
    assert code == 0 and outcome["ok"], outcome
    assert mtls.seen[path][0]["client_cn"] == "sitewatch-probe"


# --- a missing ${VAR} -------------------------------------------------------------------------------

def test_a_missing_variable_is_a_monitor_failure_and_nothing_is_sent(check, echo):
    path, url = echo.path("missing")
    code, outcome = check(url, "--header", "X-Key: ${SITEWATCH_TEST_UNSET_VAR}")
    assert code == 1
    assert outcome["error_kind"] == "monitor"
    assert "${SITEWATCH_TEST_UNSET_VAR}" in outcome["error"] and "header X-Key" in outcome["error"]
    assert path not in echo.seen


# --- sitewatch run: a missing variable, and a token in every output ---------------------------------

def test_run_hands_back_a_missing_variable_and_never_shows_the_token(sitewatch, cli, db, dsn, echo,  # noqa: F811
                                                                     web_factory):
    missing_path, missing_url = echo.path("missing-run")
    loop_path, loop_url = echo.path("loop")
    loop_url = echo.base + "/loop/start" + loop_path          # /loop/...: redirects to /loop/TOKEN
    ok_path, ok_url = echo.path("plain")
    for args in (["url", "add", missing_url, "--name", "no-var", "-p", "5", "--bearer", "${ABSENT_TOKEN}"],
                 ["url", "add", loop_url, "--name", "token-loop", "-p", "5", "--bearer", "${RUN_TOKEN}",
                  "--failure-threshold", "1"],
                 ["url", "add", ok_url, "-p", "5"]):
        assert cli(*args, env={"RUN_TOKEN": TOKEN}).returncode == 0
    run = sitewatch(env={"RUN_TOKEN": TOKEN, "SITEWATCH_SUPERVISOR__SUMMARY_INTERVAL": 2})
    run.wait_started()
    ids = dict(_rows(db, "SELECT coalesce(name, url), id FROM url"))
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (ids["token-loop"],)) >= 1
               and scalar(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (ids[ok_url],)) >= 1,
               30, "results of the other monitors")
    run.wait_for("monitor failure: this host cannot check the URL; its slot is handed back unchecked",
                 timeout=30)
    code, _ = run.stop(timeout=15)
    assert code == 0

    # The missing variable: nothing sent, nothing recorded, the state not moved; logged with its name.
    assert missing_path not in echo.seen
    assert scalar(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (ids["no-var"],)) == 0
    assert scalar(db, "SELECT state FROM url_state WHERE url_id = %s", (ids["no-var"],)) == "unknown"
    logged = run.events("monitor failure: this host cannot check the URL; its slot is handed back unchecked")
    assert "${ABSENT_TOKEN} in the bearer is not set" in logged[0]["error"] and logged[0]["url_id"] == ids["no-var"]

    # The token went out (the loop's Location held it), and shows nowhere.
    assert any(TOKEN in p for p in echo.seen)
    error = scalar(db, "SELECT error FROM task_result WHERE url_id = %s ORDER BY scheduled_at LIMIT 1",
                   (ids["token-loop"],))
    assert "redirect" in error and "***" in error and TOKEN not in error
    outputs = {"log": run.text()}
    for args in (["url", "list"], ["url", "list", "--json"], ["status"], ["status", "--json"],
                 ["status", "token-loop"], ["history", "token-loop"], ["incidents"], ["incidents", "--json"]):
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        outputs[" ".join(args)] = result.stdout + result.stderr
    web = web_factory(dsn)
    url_id = ids["token-loop"]
    for page in ("/", "/api/v1/urls", f"/api/v1/urls/{url_id}", f"/api/v1/urls/{url_id}/checks",
                 f"/urls/{url_id}", "/api/v1/incidents", "/incidents", "/incidents.atom"):
        response = web.get(page)
        assert response.status_code == 200, page
        outputs[page] = response.text
    assert json.loads(outputs[f"/api/v1/urls/{url_id}"])["request"]["bearer"] == "***"
    outputs["check"] = cli("check", loop_url, "--bearer", "${RUN_TOKEN}", env={"RUN_TOKEN": TOKEN}).stdout
    for where, text in outputs.items():
        assert TOKEN not in text, where
    assert "***" in outputs["history token-loop"]
    assert count(db, "incident") >= 1


def _rows(db, sql, args=()):
    with db.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()
