"""The HTTP client against a scripted loopback server: status mapping, retries, headers."""

from __future__ import annotations

import time

import pytest
from scripted_server import DROP, SCRIPTED_TOKEN

from synthbio_pipeline import errors
from synthbio_pipeline.client.http import SynthesizeClient, check_base_url, clean_server_message, resolve_base_url

TOKEN = SCRIPTED_TOKEN


def client_for(server, **kwargs):
    kwargs.setdefault("max_retries", 2)
    return SynthesizeClient(server.url, **kwargs)


NEVER_RETRIED = [
    (400, errors.ValidationError),
    (401, errors.AuthenticationError),
    (403, errors.AuthenticationError),
    (404, errors.NotFoundError),
    (422, errors.ValidationError),
]


@pytest.mark.parametrize("status, exception", NEVER_RETRIED)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_client_errors_map_to_types_and_are_never_retried(server, status, exception, method):
    path = "/api/models/gem-1-bulk/predict" if method == "POST" else "/api/models"
    server.answer(method, path, (status, {}, {"error": "nope"}))
    with pytest.raises(exception) as caught:
        client_for(server).request(method, path, json_body={} if method == "POST" else None)
    assert caught.value.status_code == status
    assert server.count(method, path) == 1


@pytest.mark.parametrize(
    "status, exception",
    [
        (429, errors.RateLimitError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
        (504, errors.ServerError),
    ],
)
def test_transient_statuses_are_retried_then_raise(server, status, exception):
    server.answer("GET", "/api/models", (status, {}, {"error": "busy"}))
    with pytest.raises(exception):
        client_for(server, max_retries=2).request("GET", "/api/models")
    assert server.count("GET", "/api/models") == 3


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_transient_status_then_success(server, method):
    path = "/api/models/gem-1-bulk/predict" if method == "POST" else "/api/models"
    answer = {"modelQueryId": "q1"} if method == "POST" else {"models": []}
    server.answer(method, path, (503, {}, {}), (200, {}, answer))
    assert client_for(server).request(method, path, json_body={} if method == "POST" else None) == answer
    assert server.count(method, path) == 2


def test_retry_after_seconds_is_honoured(server):
    server.answer("GET", "/api/models", (429, {"Retry-After": "1"}, {}), (200, {}, {"models": []}))
    start_time = time.monotonic()
    client_for(server).request("GET", "/api/models")
    assert time.monotonic() - start_time >= 1.0


def test_retry_after_http_date_is_honoured(server):
    from email.utils import formatdate

    server.answer(
        "GET",
        "/api/models",
        (429, {"Retry-After": formatdate(time.time() + 2, usegmt=True)}, {}),
        (200, {}, {"models": []}),
    )
    start_time = time.monotonic()
    client_for(server).request("GET", "/api/models")
    assert time.monotonic() - start_time >= 0.9  # the date has one-second resolution


def test_dropped_connection_is_retried_for_get(server):
    server.answer("GET", "/api/models", (0, {}, DROP), (200, {}, {"models": []}))
    assert client_for(server).request("GET", "/api/models") == {"models": []}
    assert server.count("GET", "/api/models") == 2


def test_dropped_answer_to_a_submission_is_not_resent(server):
    """The server may have accepted it: sending again could pay for the query twice."""
    path = "/api/models/gem-1-bulk/predict"
    server.answer("POST", path, (0, {}, DROP), (200, {}, {"modelQueryId": "q2"}))
    with pytest.raises(errors.APIConnectionError):
        client_for(server).submit("gem-1-bulk", {"inputs": []})
    assert server.count("POST", path) == 1


def test_retry_deadline_stops_retrying(server):
    server.answer("GET", "/api/models", (503, {"Retry-After": "1"}, {}))
    client = SynthesizeClient(server.url, max_retries=50, retry_deadline_seconds=1.5)
    with pytest.raises(errors.ServerError):
        client.request("GET", "/api/models")
    assert 2 <= server.count("GET", "/api/models") <= 3


def test_validation_error_lists_every_path_and_message(server):
    body = {
        "error": "Invalid query",
        "errors": [
            {"path": "inputs[0].metadata.sex", "message": "must be male or female"},
            {"path": "sampling_strategy", "message": "not allowed for gem-1-sc"},
        ],
    }
    server.answer("POST", "/api/models/gem-1-sc/predict", (422, {}, body))
    with pytest.raises(errors.ValidationError) as caught:
        client_for(server).submit("gem-1-sc", {})
    text = str(caught.value)
    assert "inputs[0].metadata.sex: must be male or female" in text
    assert "sampling_strategy: not allowed for gem-1-sc" in text
    assert [p.path for p in caught.value.problems] == ["inputs[0].metadata.sex", "sampling_strategy"]


def test_authentication_error_names_the_variable_and_not_the_token(server):
    server.answer("GET", "/api/models", (401, {}, {"error": "bad token"}))
    with pytest.raises(errors.AuthenticationError) as caught:
        client_for(server).list_models()
    assert "SYNTHESIZE_API_KEY" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_token_goes_to_the_api_and_never_to_the_download_host(server, tmp_path):
    server.answer("GET", "/api/models", (200, {}, {"models": []}))
    server.answer("GET", "/files/r.json", (200, {}, b'{"ok": true}'))
    client = client_for(server)
    client.list_models()
    client.download(f"{server.url}/files/r.json?signature=abc", tmp_path / "r.json")
    api_call, download = server.requests
    assert api_call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert api_call.headers["Accept"] == "application/json"
    assert "Authorization" not in download.headers
    assert (tmp_path / "r.json").read_bytes() == b'{"ok": true}'


def test_a_redirect_from_the_api_is_not_followed(server):
    server.answer("GET", "/api/models", (302, {"Location": "http://127.0.0.2:1/steal"}, {}))
    with pytest.raises(errors.APIStatusError):
        client_for(server).list_models()
    assert server.count() == 1


def test_expired_download_url_is_replaced_by_a_fresh_one(server, tmp_path):
    fresh = f"{server.url}/files/fresh.json?sig=2"
    server.answer("GET", "/files/old.json", (403, {}, b"<Error>Request has expired</Error>"))
    server.answer("GET", "/api/model-queries/q9/status", (200, {}, {"status": "ready", "downloadUrl": fresh}))
    server.answer("GET", "/files/fresh.json", (200, {}, b"[]"))
    path = client_for(server).fetch_result(
        "q9", {"downloadUrl": f"{server.url}/files/old.json?sig=1"}, tmp_path / "out.json"
    )
    assert path.read_bytes() == b"[]"
    assert server.count("GET", "/api/model-queries/q9/status") == 1


def test_a_short_download_is_an_error_and_leaves_no_file(server, tmp_path):
    server.answer("GET", "/files/r.json", (200, {"Claim-Length": "5000"}, b'{"gene_order": ['))
    with pytest.raises(errors.APIConnectionError):
        client_for(server, max_retries=0).download(f"{server.url}/files/r.json", tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_wait_reports_each_status_change_and_returns_ready(server):
    url = f"{server.url}/files/x"
    server.answer(
        "GET",
        "/api/model-queries/q1/status",
        (200, {}, {"status": "queued"}),
        (200, {}, {"status": "running"}),
        (200, {}, {"status": "running"}),
        (200, {}, {"status": "ready", "downloadUrl": url}),
    )
    seen = []
    payload = client_for(server).wait("q1", poll_interval=0, on_status=lambda s, p, t: seen.append(s))
    assert payload["downloadUrl"] == url
    assert seen == ["queued", "running", "ready"]


def test_failed_status_raises_with_the_traceback_stripped(server):
    message = "metadata value not in vocabulary\nTraceback (most recent call last):\n  File x\nKeyError: 1"
    server.answer("GET", "/api/model-queries/q1/status", (200, {}, {"status": "failed", "message": message}))
    with pytest.raises(errors.QueryFailedError) as caught:
        client_for(server).wait("q1", poll_interval=0)
    assert "metadata value not in vocabulary" in str(caught.value)
    assert "Traceback" not in str(caught.value) and "KeyError" not in str(caught.value)


def test_poll_timeout_raises_with_the_query_id(server):
    server.answer("GET", "/api/model-queries/q1/status", (200, {}, {"status": "running"}))
    with pytest.raises(errors.PollTimeoutError) as caught:
        client_for(server).wait("q1", poll_interval=1, poll_timeout=1.5)
    assert caught.value.query_id == "q1" and caught.value.last_status == "running"


def test_missing_token_fails_before_any_request(server, monkeypatch, memory_keyring):
    monkeypatch.delenv("SYNTHESIZE_API_KEY")
    with pytest.raises(errors.MissingTokenError) as caught:
        client_for(server).list_models()
    assert "SYNTHESIZE_API_KEY" in str(caught.value) and "emulator" in str(caught.value)
    assert server.count() == 0


def test_token_from_the_vendor_keyring_entry_is_used(server, monkeypatch, memory_keyring):
    monkeypatch.delenv("SYNTHESIZE_API_KEY")
    memory_keyring.set_password("pysynthbio", "api_token", "from-keyring")
    server.answer("GET", "/api/models", (200, {}, {"models": []}))
    client_for(server).list_models()
    assert server.requests[0].headers["Authorization"] == "Bearer from-keyring"


@pytest.mark.parametrize("url", ["http://example.org", "http://10.0.0.1:8080", "ftp://127.0.0.1", "app.synthesize.bio"])
def test_insecure_or_malformed_base_urls_are_refused(url):
    with pytest.raises(errors.InsecureURLError):
        check_base_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://app.synthesize.bio", "http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:9", "http://127.3.4.5"],
)
def test_https_and_loopback_base_urls_are_accepted(url):
    assert check_base_url(url) == url


def test_base_url_resolution_order(monkeypatch):
    monkeypatch.delenv("SYNTHESIZE_API_BASE_URL", raising=False)
    assert resolve_base_url() == "https://app.synthesize.bio"
    monkeypatch.setenv("SYNTHESIZE_API_BASE_URL", "http://127.0.0.1:1/")
    assert resolve_base_url() == "http://127.0.0.1:1"
    monkeypatch.setenv("SYNTHESIZE_API_BASE_URL__GEM_1_BULK", "http://127.0.0.1:2")
    assert resolve_base_url(model_id="gem-1-bulk_predict-metadata") == "http://127.0.0.1:2"
    assert resolve_base_url("https://x.example", model_id="gem-1-bulk") == "https://x.example"


def test_clean_server_message():
    assert clean_server_message("bad\nTraceback (most recent call last):\n boom") == "bad"
    assert clean_server_message("Traceback (most recent call last):\n boom") == "no message"
    assert clean_server_message("fine") == "fine"
