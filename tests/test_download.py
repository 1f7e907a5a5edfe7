"""Hostile servers and crafted URLs against the client (issue 12), on loopback only.

Base URLs that two URL parsers read differently; result downloads that are gzip-encoded,
gzip bombs, declared huge, trickled, redirected, or pointed at internal addresses; error
answers that are huge or carry secrets; bodies JSON cannot carry; submissions whose answer is
lost. "Private address" cases never connect anywhere: name resolution is replaced.
"""

from __future__ import annotations

import gzip
import socket
import time
import zlib

import pytest
from scripted_server import DROP, ScriptedServer, start

from synthbio_pipeline import errors
from synthbio_pipeline.client import urls
from synthbio_pipeline.client.download import DownloadLimits
from synthbio_pipeline.client.http import SynthesizeClient, check_base_url

TOKEN = "tok-DOWNLOAD-test-91c2"
RESULT = b'{"gene_order": ["ENSG00000000003", "ENSG00000000005"], "outputs": [{"counts": [1, 2]}]}' * 3


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    state = ScriptedServer()
    httpd, url = start(state)
    state.url = url
    state.port = httpd.server_address[1]
    yield state
    httpd.shutdown()


def client_for(server, **kwargs):
    kwargs.setdefault("max_retries", 0)
    return SynthesizeClient(server.url, **kwargs)


def refused(caught) -> str:
    return caught.value.limit


# --- 1. base URLs: one parser decides the host --------------------------------------------------


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("http://evil.example:1\\@127.0.0.1:8080", "backslash"),
        ("https://evil.example\\@app.synthesize.bio", "backslash"),
        ("http://user@127.0.0.1:8080", "user name or password"),
        ("http://evil.example%2f@127.0.0.1", "user name or password"),
        ("http://127.0.0.1 :8080", "whitespace"),
        ("http://127.0.0.1:8080\t", "whitespace"),
        ("http://127.0.0.1:8080\x00", "control character"),
        ("https://app.synthesize.bio/?token=1", "query"),
        ("https://xn--exmple-cua.example\u00e9", "ASCII"),
        ("http://127.0.0.1:99999", "not a valid URL"),
    ],
)
def test_base_urls_that_parsers_read_differently_are_refused_naming_the_setting(url, fragment):
    with pytest.raises(errors.InsecureURLError) as caught:
        check_base_url(url)
    assert "api_base_url" in str(caught.value) and fragment in str(caught.value)


def test_the_backslash_bypass_never_reaches_any_host(server):
    """Before: urlsplit saw 127.0.0.1, urllib3 connected to the host before the backslash."""
    bypass = f"http://127.0.0.2:{server.port}\\@127.0.0.1:{server.port}"
    with pytest.raises(errors.InsecureURLError):
        SynthesizeClient(bypass).list_models()
    assert server.count() == 0


# --- 2. sizes, encodings, deadlines -------------------------------------------------------------


def test_a_gzip_encoded_result_is_decoded_and_checked_against_its_raw_length(server, tmp_path):
    """Before: decoded bytes were compared with the compressed Content-Length ("got 217 of 135")."""
    body = gzip.compress(RESULT)
    server.answer("GET", "/r.json", (200, {"Content-Encoding": "gzip"}, body))
    path = client_for(server).download(f"{server.url}/r.json?sig=1", tmp_path / "r.json", expected_samples=3)
    assert path.read_bytes() == RESULT
    assert "gzip" in server.requests[0].headers["Accept-Encoding"]


@pytest.mark.parametrize("wrap", [zlib.compress, lambda data: zlib.compress(data)[2:-4]], ids=["zlib", "raw"])
def test_a_deflate_encoded_result_is_decoded_either_way_servers_send_it(server, tmp_path, wrap):
    server.answer("GET", "/r.json", (200, {"Content-Encoding": "deflate"}, wrap(RESULT)))
    assert client_for(server).download(f"{server.url}/r.json", tmp_path / "r.json").read_bytes() == RESULT


def test_a_multi_member_gzip_body_is_decoded_whole(server, tmp_path):
    server.answer("GET", "/r.json", (200, {"Content-Encoding": "gzip"}, gzip.compress(RESULT) + gzip.compress(b"\n")))
    assert client_for(server).download(f"{server.url}/r.json", tmp_path / "r.json").read_bytes() == RESULT + b"\n"


def test_a_gzip_bomb_stops_at_the_limit_and_leaves_nothing(server, tmp_path):
    """Before: a 305 KB bomb wrote 300 MB before it was refused."""
    bomb = gzip.compress(bytes(300 << 20), compresslevel=9)
    server.answer("GET", "/r.json", (200, {"Content-Encoding": "gzip"}, bomb))
    client = client_for(server)
    start_time = time.monotonic()
    with pytest.raises(errors.DownloadRefusedError) as caught:
        client.download(f"{server.url}/r.json", tmp_path / "r.json", expected_samples=1)
    assert refused(caught) == "size"
    limit = client.download_limits.max_bytes(1)
    assert limit < 300 << 20 and f"{limit / 1e6:,.1f} MB" in str(caught.value)
    assert "bytes_per_value" in str(caught.value)  # how to raise it
    assert list(tmp_path.iterdir()) == []
    assert time.monotonic() - start_time < 20


def test_a_declared_huge_body_is_refused_before_reading(server, tmp_path):
    """Before: a declared 10 GiB body was streamed to disk."""
    server.answer("GET", "/r.json", (200, {"Claim-Length": str(10 << 30)}, b"x" * 1000))
    with pytest.raises(errors.DownloadRefusedError) as caught:
        client_for(server).download(f"{server.url}/r.json", tmp_path / "r.json", expected_samples=5)
    assert refused(caught) == "size" and "declares 10,737.4 MB" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_undeclared_body_over_the_limit_is_cut_off(server, tmp_path):
    limits = DownloadLimits(fixed_bytes=1000, genes=10, bytes_per_value=10)
    server.answer("GET", "/r.json", (200, {}, iter([b"x" * 600] * 10)))  # no Content-Length
    with pytest.raises(errors.DownloadRefusedError) as caught:
        client_for(server, download_limits=limits).download(f"{server.url}/r.json", tmp_path / "r", expected_samples=1)
    assert refused(caught) == "size"
    assert list(tmp_path.iterdir()) == []


def test_a_trickling_server_is_stopped_by_the_download_deadline(server, tmp_path):
    """Before: the read timeout was per read, so a byte every few seconds held the job for good."""

    def trickle():
        for _ in range(200):
            yield b"x"
            time.sleep(0.1)

    server.answer("GET", "/r.json", (200, {"Claim-Length": "200"}, trickle()))
    client = client_for(server, download_limits=DownloadLimits(deadline_seconds=1.0))
    start_time = time.monotonic()
    with pytest.raises(errors.DownloadRefusedError) as caught:
        client.download(f"{server.url}/r.json", tmp_path / "r.json")
    assert refused(caught) == "deadline" and "deadline_seconds" in str(caught.value)
    assert time.monotonic() - start_time < 5
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_gzip_body_is_an_error_and_leaves_no_file(server, tmp_path):
    server.answer("GET", "/r.json", (200, {"Content-Encoding": "gzip"}, gzip.compress(RESULT)[:-12]))
    with pytest.raises(errors.APIConnectionError, match="truncated"):
        client_for(server).download(f"{server.url}/r.json", tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_a_content_coding_that_was_not_asked_for_is_refused(server, tmp_path):
    server.answer("GET", "/r.json", (200, {"Content-Encoding": "br"}, b"\x0b\x02\x80"))
    with pytest.raises(errors.DownloadRefusedError) as caught:
        client_for(server).download(f"{server.url}/r.json", tmp_path / "r.json")
    assert refused(caught) == "encoding"


def test_the_size_limit_follows_the_samples_asked_for():
    limits = DownloadLimits()
    assert limits.max_bytes(1) == (64 << 20) + 65_536 * 32
    assert limits.max_bytes(1000) - limits.max_bytes(999) == 2 << 20
    assert limits.max_bytes(None) == limits.max_bytes(10_000)


# --- 4. where downloads may go ------------------------------------------------------------------


def https_client(**kwargs):
    """A client whose API is https (never contacted here): downloads must be https to public hosts."""
    return SynthesizeClient("https://api.example", max_retries=0, **kwargs)


@pytest.mark.parametrize(
    "url, limit",
    [
        ("http://objects.example/r.json", "url"),  # plain http with an https API
        ("ftp://objects.example/r.json", "url"),
        ("file:///etc/passwd", "url"),
        ("https://user:pw@objects.example/r.json", "url"),
        ("https://objects.example\\@127.0.0.1/r.json", "url"),
        ("https://127.0.0.1:1/r.json", "address"),  # loopback, while the API is not
        ("https://169.254.169.254/latest/meta-data/", "address"),  # cloud metadata (link-local)
        ("https://10.1.2.3/r.json", "address"),
        ("https://[::ffff:192.168.0.1]/r.json", "address"),
        ("https://[fe80::1]/r.json", "address"),
        ("https://0.0.0.0/r.json", "address"),
        ("https://224.0.0.1/r.json", "address"),
    ],
)
def test_download_urls_to_other_schemes_or_internal_addresses_are_refused(url, limit, tmp_path, monkeypatch):
    """Before: any scheme requests knows, plain http, private and link-local addresses were fetched."""
    connected = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connected.append(a))
    with pytest.raises(errors.DownloadRefusedError) as caught:
        https_client().download(url, tmp_path / "r.json")
    assert refused(caught) == limit
    assert "?" not in str(caught.value) and "pw" not in str(caught.value)
    assert connected == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("addresses", [["10.0.0.7"], ["93.184.216.34", "172.16.0.1"], ["fd00::1"], ["100.64.0.1"]])
def test_a_name_that_resolves_to_any_internal_address_is_refused(addresses, tmp_path, monkeypatch):
    monkeypatch.setattr(urls, "resolve", lambda host, port: addresses)
    with pytest.raises(errors.DownloadRefusedError) as caught:
        https_client().download("https://objects.example/r.json?X-Amz-Signature=abc", tmp_path / "r.json")
    assert refused(caught) == "address" and "objects.example" in str(caught.value)
    assert "X-Amz-Signature" not in str(caught.value)


def test_a_name_that_rebinds_to_loopback_between_check_and_connect_is_refused(server, tmp_path, monkeypatch):
    """DNS rebinding: the check sees a public address, the connection reaches loopback: refused on connect."""
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        address = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(errors.DownloadRefusedError) as caught:
        https_client().download(f"https://rebind.example:{server.port}/r.json", tmp_path / "r.json")
    assert refused(caught) == "address" and "127.0.0.1" in str(caught.value)
    assert len(calls) == 2 and server.count() == 0


def test_loopback_downloads_are_allowed_when_the_api_is_on_loopback(server, tmp_path):
    server.answer("GET", "/r.json", (200, {}, RESULT))
    assert client_for(server).download(f"{server.url}/r.json", tmp_path / "r.json").read_bytes() == RESULT


def test_a_bounded_number_of_same_scheme_redirects_is_followed(server, tmp_path):
    server.answer("GET", "/a", (302, {"Location": "/b?sig=2"}, b""))
    server.answer("GET", "/b", (307, {"Location": f"{server.url}/c"}, b""))
    server.answer("GET", "/c", (200, {}, RESULT))
    assert client_for(server).download(f"{server.url}/a", tmp_path / "r.json").read_bytes() == RESULT
    assert [r.path for r in server.requests] == ["/a", "/b?sig=2", "/c"]
    assert all("Authorization" not in r.headers for r in server.requests)


def test_a_redirect_loop_stops_after_the_limit(server, tmp_path):
    server.answer("GET", "/a", (302, {"Location": "/a"}, b""))
    with pytest.raises(errors.DownloadRefusedError) as caught:
        client_for(server).download(f"{server.url}/a", tmp_path / "r.json")
    assert refused(caught) == "redirects" and server.count("GET", "/a") == 4


@pytest.mark.parametrize(
    "location, limit",
    [
        ("https://127.0.0.1:1/b", "redirects"),  # another scheme
        # An internal host: plain http is allowed to loopback only (an https API would also refuse the address).
        ("http://10.0.0.1/b", "url"),
        ("http://169.254.169.254/latest/meta-data/", "url"),
        ("gopher://127.0.0.1:1/b", "url"),
    ],
)
def test_a_redirect_to_another_scheme_or_an_internal_host_is_refused(server, tmp_path, location, limit):
    server.answer("GET", "/a", (302, {"Location": location}, b""))
    with pytest.raises(errors.DownloadRefusedError) as caught:
        client_for(server).download(f"{server.url}/a", tmp_path / "r.json")
    assert refused(caught) == limit and server.count() == 1
    assert list(tmp_path.iterdir()) == []


def test_an_error_answer_of_the_download_host_is_read_only_in_part(server, tmp_path):
    server.answer("GET", "/r.json", (500, {}, b"E" * (5 << 20)))
    with pytest.raises(errors.ServerError) as caught:
        client_for(server).download(f"{server.url}/r.json", tmp_path / "r.json")
    assert len(caught.value.body) <= 64 << 10 and len(str(caught.value)) < 1000


# --- 8. server error text ----------------------------------------------------------------------


def test_server_error_text_is_cut_short_and_token_shaped_strings_redacted(server):
    """Before: the server's text was shown whole, echoed tokens and signatures included."""
    secret = "sk_live_4f9aD83kQ0zX7mB2nC5vL1pR6tY8wE3u"
    message = f"invalid token {TOKEN}; Authorization: Bearer {secret}; url ?X-Amz-Signature=deadbeef " + "x" * 5000
    server.answer("GET", "/api/models", (400, {}, {"error": message}))
    with pytest.raises(errors.ValidationError) as caught:
        client_for(server).list_models()
    text = str(caught.value)
    assert TOKEN not in text and secret not in text and "deadbeef" not in text
    assert "[redacted]" in text and len(text) < 1200 and "more characters" in text


def test_a_failed_query_message_is_redacted_and_short(server):
    message = "boom eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl " + "y" * 3000
    server.answer("GET", "/api/model-queries/q1/status", (200, {}, {"status": "failed", "message": message}))
    with pytest.raises(errors.QueryFailedError) as caught:
        client_for(server).wait("q1", poll_interval=0)
    assert "eyJhbGci" not in str(caught.value) and len(str(caught.value)) < 800


def test_query_ids_and_ensembl_ids_are_not_taken_for_secrets():
    from synthbio_pipeline.client.http import redact_secrets

    text = (
        "query 3f2b9c4e-8a1d-4c7e-9b2f-0a1b2c3d4e5f: gene ENSG00000141510 not in UBERON:0002048 for "
        "gem-1-bulk_reference-conditioning; see /usr/lib/python3.11/site-packages/requests/models.py"
    )
    assert redact_secrets(text) == text
    assert redact_secrets("key ghp_16C7e42F292c6912E7710c838347Ae178B4a") == "key [redacted]"


# --- 5. values JSON cannot carry ---------------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_body_json_cannot_carry_is_refused_before_sending_not_called_a_connection_error(server, value):
    """Before: Infinity surfaced at submit as a misleading connection error."""
    with pytest.raises(errors.QueryValidationError, match="not valid JSON"):
        client_for(server).submit("gem-1-bulk", {"inputs": [{"metadata": {"age_years": value}, "num_samples": 1}]})
    assert server.count() == 0


@pytest.mark.parametrize("option", ["poll_interval", "poll_timeout"])
def test_polling_with_a_nan_setting_is_refused_rather_than_endless(server, option):
    with pytest.raises(ValueError, match="finite"):
        client_for(server).wait("q1", **{option: float("nan")})
    assert server.count() == 0


# --- ambiguous submissions ---------------------------------------------------------------------


def test_a_submission_whose_answer_was_lost_says_it_may_have_been_accepted(server):
    path = "/api/models/gem-1-bulk/predict"
    server.answer("POST", path, (0, {}, DROP), (200, {}, {"modelQueryId": "q2"}))
    with pytest.raises(errors.AmbiguousSubmissionError) as caught:
        client_for(server, max_retries=3).submit("gem-1-bulk", {"inputs": []})
    text = str(caught.value)
    assert "may have accepted it" in text and "not sent again" in text and "rerun submits it again" in text
    assert server.count("POST", path) == 1


def test_a_submission_that_never_connected_is_not_called_ambiguous(monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(errors.APIConnectionError) as caught:
        SynthesizeClient(f"http://127.0.0.1:{port}", max_retries=0).submit("gem-1-bulk", {})
    assert not isinstance(caught.value, errors.AmbiguousSubmissionError)


def test_the_samples_asked_are_read_from_any_body_shape():
    from synthbio_pipeline.client.download import samples_asked

    assert samples_asked({"inputs": [{"num_samples": 3}, {"num_samples": 4}, {"counts": [1]}]}) == 8
    assert samples_asked({"inputs": {"modality": "bulk", "items": [{"num_samples": 2}, {}]}}) == 3
    assert samples_asked({"inputs": "weird"}) is None and samples_asked({"inputs": []}) is None
