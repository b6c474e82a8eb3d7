"""Every engine honours every Request field, the same way (engine.fetch, a real echo server).

The `engine` fixture runs each test once per engine; a case must give the same
result on both (issue 23: differential tests).
"""

import json
import re
import socket
import ssl
import subprocess
import sys

import pytest

from sitewatch.check import choice as engines
from sitewatch.check.engine import USER_AGENT, Request
from sitewatch.check.probe import Target, check
from tests.conftest import clean_env
from tests.enginefixture import EchoServer
from tests.test_probe import _self_signed_cert

pytestmark = pytest.mark.serverless

ENGINES = ["urllib3", "curl"]


@pytest.fixture(params=ENGINES)
def engine(request):
    if request.param == "curl" and not engines.curl_available():
        pytest.skip("pycurl is not installed")
    chosen = engines.engine_named(request.param)
    assert chosen.name == request.param
    return chosen


@pytest.fixture(scope="module")
def echo():
    with EchoServer() as server:
        yield server


def fetch_echo(engine, request: Request) -> dict:
    response = engine.fetch(request)
    assert response.error_kind is None, response.error
    assert response.status == 200
    return json.loads(response.body)


def header(echoed: dict, name: str) -> list:
    return [value for key, value in echoed["headers"] if key == name]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_is_sent_with_its_body(engine, echo, method):
    body = b"payload \x00\xff" if method not in ("GET", "OPTIONS") else None
    echoed = fetch_echo(engine, Request(echo.url(), method=method, body=body))
    assert echoed["method"] == method
    assert echoed["body"].encode("latin-1") == (body or b"")


def test_head_gets_the_headers_and_no_body(engine, echo):
    response = engine.fetch(Request(echo.url(), method="HEAD"))
    assert response.error_kind is None and response.status == 200
    assert response.body is None
    assert ("x-echo", "yes") in response.headers  # names lower-cased


def test_request_headers_are_sent_and_replace_ours(engine, echo):
    echoed = fetch_echo(engine, Request(echo.url(), headers=(("X-Token", "abc"), ("User-Agent", "custom/1"))))
    assert header(echoed, "x-token") == ["abc"]
    assert header(echoed, "user-agent") == ["custom/1"]


def test_our_user_agent_and_a_fresh_connection(engine, echo):
    echoed = fetch_echo(engine, Request(echo.url()))
    assert header(echoed, "user-agent") == [USER_AGENT]
    assert header(echoed, "connection") == ["close"]


def test_response_headers_and_timings(engine, echo):
    response = engine.fetch(Request(echo.url()))
    assert ("content-type", "application/json") in response.headers
    assert response.response_time_ms > 0 and response.redirects == 0
    timings = response.timings
    assert timings.dns_ms is not None and timings.connect_ms is not None and timings.first_byte_ms is not None
    assert timings.tls_ms is None  # plain http


@pytest.mark.parametrize(("status", "method", "kept"), [
    (303, "POST", "GET"), (302, "POST", "GET"), (301, "POST", "GET"),
    (307, "POST", "POST"), (308, "PUT", "PUT"), (302, "DELETE", "DELETE"), (303, "HEAD", "HEAD"),
])
def test_redirects_keep_or_change_the_method(engine, echo, status, method, kept):
    url = echo.url(f"/redirect/{status}?{echo.url()}")
    response = engine.fetch(Request(url, method=method, body=b"data" if method != "HEAD" else None))
    assert response.error_kind is None, response.error
    assert response.redirects == 1
    if kept == "HEAD":
        return
    echoed = json.loads(response.body)
    assert echoed["method"] == kept
    assert echoed["body"] == ("data" if kept == method else "")


def test_credential_headers_do_not_follow_to_another_host(engine, echo):
    other = echo.url().replace("127.0.0.1", "localhost")
    request = Request(echo.url(f"/redirect/302?{other}"),
                      headers=(("Authorization", "Bearer tok"), ("Cookie", "a=b"), ("X-Other", "kept")))
    echoed = fetch_echo(engine, request)
    assert header(echoed, "authorization") == [] and header(echoed, "cookie") == []
    assert header(echoed, "x-other") == ["kept"]
    same = fetch_echo(engine, Request(echo.url(f"/redirect/302?{echo.url()}"),
                                      headers=(("Authorization", "Bearer tok"),)))
    assert header(same, "authorization") == ["Bearer tok"]


def test_extra_secrets_are_scrubbed_from_errors(engine):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The secret shows up in the host name of the message ("cannot connect to ...").
    response = engine.fetch(Request(f"http://127.0.0.1:{port}/", secrets=frozenset({"127.0.0.1"})))
    assert response.error_kind == "connect"
    assert "127.0.0.1" not in response.error


def test_source_address_is_bound(engine, echo):
    echoed = fetch_echo(engine, Request(echo.url(), source_address="127.0.0.2"))
    assert echoed["client"] == "127.0.0.2"


def ipv4_only_name():
    """A name the system resolver gives 127.0.0.1 only (not `localhost`: libcurl answers
    that one itself, with ::1 too)."""
    for name in (socket.gethostname(), "vm", "runsc"):
        try:
            found = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
        except OSError:
            continue
        if found == {"127.0.0.1"}:
            return name
    pytest.skip("no host name resolves to 127.0.0.1 alone here")


def test_ip_version_filters_the_addresses(engine, echo):
    name = ipv4_only_name()
    assert fetch_echo(engine, Request(echo.url().replace("127.0.0.1", name), ip_version=4))
    response = engine.fetch(Request(echo.url().replace("127.0.0.1", name), ip_version=6, timeout=5))
    assert response.error_kind == "dns", response.error
    response = engine.fetch(Request(echo.url(), ip_version=6, timeout=5))  # a literal of the other version
    assert response.error_kind == "dns", response.error


def test_ip_version_6_reaches_an_ipv6_server(engine):
    try:
        server = EchoServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        assert fetch_echo(engine, Request(server.url(), ip_version=6))["client"] == "::1"
        response = engine.fetch(Request(server.url(), ip_version=4, timeout=5))
        assert response.error_kind == "dns", response.error


@pytest.fixture(scope="module")
def mtls(tmp_path_factory):
    """An https echo server that requires a client certificate, and that certificate."""
    server_cert, server_key = _self_signed_cert(tmp_path_factory.mktemp("server"))
    client_cert, client_key = _self_signed_cert(tmp_path_factory.mktemp("client"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_cert)
    with EchoServer(tls=context) as server:
        server.client = (client_cert, client_key)
        yield server


def test_client_certificate_is_presented(engine, mtls):
    cert, key = mtls.client
    echoed = fetch_echo(engine, Request(mtls.url(), verify_tls=False, client_cert=cert, client_key=key))
    assert echoed["client_cert"] is True


def test_without_the_client_certificate_the_server_refuses(engine, mtls):
    response = engine.fetch(Request(mtls.url(), verify_tls=False, timeout=5))
    assert response.error_kind in ("tls", "protocol"), response  # TLS 1.3 reports it after the handshake
    assert response.cert_days_left in (29, 30)


def test_a_missing_client_certificate_file_is_tls(engine, mtls, tmp_path):
    response = engine.fetch(Request(mtls.url(), verify_tls=False, client_cert=str(tmp_path / "none.pem")))
    assert response.error_kind == "tls", response


def test_check_runs_on_the_engine_given(engine, echo):
    outcome = check(Target(echo.url(), regex='"method": "GET"'), engine)
    assert outcome.ok, outcome
    assert outcome.timings.first_byte_ms is not None


def test_engine_choice():
    assert engines.engine_named("urllib3").name == "urllib3"
    expected = "curl" if engines.curl_available() else "urllib3"
    assert engines.engine_named("auto").name == expected
    with pytest.raises(ValueError, match="unknown check engine"):
        engines.engine_named("wget")


# --------------------------------------------------------------------------- choosing the engine: check.engine

WITHOUT_PYCURL = ("import sys; sys.modules['pycurl'] = None; "  # `import pycurl` now raises ImportError
                  "from sitewatch.cli import main; sys.exit(main(sys.argv[1:]))")


def run_check(tmp_path, url, engine=None, without_pycurl=False):
    env = clean_env(tmp_path, DB_DSN="postgresql://postgres@127.0.0.1:1/none")
    if engine is not None:
        env["SITEWATCH_CHECK__ENGINE"] = engine
    command = [sys.executable, "-c", WITHOUT_PYCURL] if without_pycurl else [sys.executable, "-m", "sitewatch"]
    return subprocess.run([*command, "check", url], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name", ["urllib3", "curl"])
def test_sitewatch_check_says_which_engine_ran(tmp_path, echo, name):
    result = run_check(tmp_path, echo.url(), name)
    assert result.returncode == 0, result.stderr
    assert f"Engine:   {name}\n" in result.stdout
    assert re.search(r"Phases:   dns [\d.]+ ms, connect [\d.]+ ms, first byte [\d.]+ ms", result.stdout)


def test_auto_is_curl_where_pycurl_imports_else_urllib3_and_the_default_is_auto(tmp_path, echo):
    assert "Engine:   curl\n" in run_check(tmp_path, echo.url(), "auto").stdout
    assert "Engine:   urllib3\n" in run_check(tmp_path, echo.url(), "auto", without_pycurl=True).stdout
    assert "Engine:   curl\n" in run_check(tmp_path, echo.url()).stdout
    assert "Engine:   urllib3\n" in run_check(tmp_path, echo.url(), without_pycurl=True).stdout


def test_curl_without_pycurl_is_refused_with_one_line(tmp_path, echo):
    result = run_check(tmp_path, echo.url(), "curl", without_pycurl=True)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "pycurl is not installed" in result.stderr


def test_an_unknown_engine_is_refused(tmp_path, echo):
    result = run_check(tmp_path, echo.url(), "wget")
    assert result.returncode == 2 and "check.engine" in result.stderr


def test_nothing_a_request_set_leaks_into_the_next_on_the_same_thread(engine, echo, mtls):
    # The curl engine keeps a handle's options from one plain GET to the next (run/transfers.py
    # and CurlEngine reuse handles): each request must get what it asks, and whatever it set must
    # not reach the plain GET after it.
    cert, key = mtls.client
    localhost = echo.url().replace("127.0.0.1", "localhost")
    cases = [
        (Request(echo.url(), method="POST", body=b"x"), lambda r, e: (e["method"], e["body"]) == ("POST", "x")),
        (Request(echo.url(), method="HEAD"), lambda r, e: r.status == 200 and r.body is None),
        (Request(echo.url(), method="PUT"), lambda r, e: e["method"] == "PUT"),
        (Request(echo.url(), method="DELETE"), lambda r, e: e["method"] == "DELETE"),
        (Request(echo.url(), headers=(("X-Extra", "1"),)), lambda r, e: header(e, "x-extra") == ["1"]),
        (Request(echo.url(), body=b"get body"), lambda r, e: (e["method"], e["body"]) == ("GET", "get body")),
        (Request(echo.url(), source_address="127.0.0.2"), lambda r, e: e["client"] == "127.0.0.2"),
        (Request(localhost, ip_version=6, timeout=5), lambda r, e: r.error_kind in ("dns", "connect")),
        (Request(echo.url(f"/redirect/307?{echo.url()}"), method="POST", body=b"y"),
         lambda r, e: (e["method"], e["body"]) == ("POST", "y")),
        (Request(mtls.url(), verify_tls=False, client_cert=cert, client_key=key),
         lambda r, e: e["client_cert"] is True and r.cert_days_left in (29, 30)),
    ]
    for other, got_what_it_asked in cases:
        response = engine.fetch(other)
        echoed = json.loads(response.body) if response.status == 200 and response.body else {}
        assert got_what_it_asked(response, echoed), (other, response)
        echoed = fetch_echo(engine, Request(echo.url()))
        assert (echoed["method"], echoed["body"], echoed["client"]) == ("GET", "", "127.0.0.1"), other
        assert not header(echoed, "x-extra") and not header(echoed, "content-length"), other
        assert header(echoed, "user-agent") == [USER_AGENT], other
    # TLS: neither a client certificate nor verification turned off carries over.
    assert engine.fetch(Request(mtls.url(), verify_tls=False, client_cert=cert, client_key=key)).status == 200
    assert engine.fetch(Request(mtls.url(), verify_tls=False, timeout=5)).error_kind in ("tls", "protocol")
    fetch_echo(engine, Request(echo.url()))
    refused = engine.fetch(Request(mtls.url(), timeout=5))      # right after a plain GET over http
    assert refused.error_kind == "tls" and "certificate verify failed" in refused.error, refused
    assert refused.cert_days_left in (29, 30)
