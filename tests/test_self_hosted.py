"""Self-hosted model containers, client side: the synchronous Arrow request, its headers, the
mode switch, and the allowed-http-hosts rule, against a scripted server (and pysynthbio 4.2.4
against the same server, for the same DataFrames)."""

from __future__ import annotations

import gzip
import json
import socket
import time

import pandas as pd
import pyarrow as pa
import pysynthbio
import pytest
from pysynthbio.arrow_transformers import transform_arrow_stream
from pysynthbio.http_client import self_hosted_enabled as vendor_self_hosted_enabled
from scripted_server import ScriptedServer, start

import synthbio_pipeline
from synthbio_pipeline import errors
from synthbio_pipeline.client.download import DownloadLimits
from synthbio_pipeline.client.http import SynthesizeClient, check_base_url, token_may_travel
from synthbio_pipeline.client.self_hosted import SelfHostedClient, self_hosted_enabled
from synthbio_pipeline.formats.arrow_stream import arrow_to_frames

TOKEN = "tok-SELF-hosted-2b9c"
ARROW = "application/vnd.apache.arrow.stream"
GENES = ["ENSG00000141510", "ENSG00000111640", "ENSG00000084674"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("SYNTHESIZE_API_KEY", "SYNTHESIZE_API_BASE_URL", "SYNTHESIZE_SELF_HOSTED"):
        monkeypatch.delenv(name, raising=False)


def serve(host="127.0.0.1"):
    state = ScriptedServer()
    httpd, url = start(state, host)
    state.url = url
    return state, httpd


@pytest.fixture
def server():
    state, httpd = serve()
    yield state
    httpd.shutdown()


def arrow_stream(rows=4, batch_rows=3) -> bytes:
    schema = pa.schema(
        [
            ("counts", pa.list_(pa.int32())),
            ("metadata", pa.struct([("sex", pa.string()), ("tissue_ontology_id", pa.string())])),
            ("biological_latent", pa.list_(pa.float32())),
        ],
        metadata={b"gene_order": json.dumps(GENES).encode(), b"request_type": b"baseline", b"model_version": b"2.2"},
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for start_row in range(0, rows, batch_rows):
            part = range(start_row, min(rows, start_row + batch_rows))
            writer.write_batch(
                pa.RecordBatch.from_pylist(
                    [
                        {
                            "counts": [i, 10 * i, 16_777_217],
                            "metadata": {"sex": ("male", "female")[i % 2], "tissue_ontology_id": "UBERON:0002107"},
                            "biological_latent": [0.5, float(i)],
                        }
                        for i in part
                    ],
                    schema=schema,
                )
            )
    return sink.getvalue().to_pybytes()


def serve_prediction(server, model_id="gem-1-bulk", data=None):
    data = arrow_stream() if data is None else data
    server.answer("POST", f"/api/models/{model_id}/predict", (200, {"Content-Type": ARROW}, data))
    return data


QUERY = {"inputs": [{"metadata": {"sex": "male"}, "num_samples": 4}], "sampling_strategy": "mean estimation"}


# --- the mode switch -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " yes ", "On", "0", "false", "no", "off", "", "2", "y"])
def test_the_environment_flag_reads_as_the_vendors(monkeypatch, value):
    monkeypatch.setenv("SYNTHESIZE_SELF_HOSTED", value)
    assert (
        self_hosted_enabled() == vendor_self_hosted_enabled() == (value.strip().lower() in {"1", "true", "yes", "on"})
    )
    assert self_hosted_enabled(False) is False and self_hosted_enabled(True) is True


# --- the prediction ------------------------------------------------------------------------


def test_a_prediction_without_a_token_sends_none_and_gives_the_vendors_frames(server, monkeypatch):
    data = serve_prediction(server)
    monkeypatch.setenv("SYNTHESIZE_SELF_HOSTED", "1")
    monkeypatch.setenv("SYNTHESIZE_API_BASE_URL__GEM_1_BULK", server.url)
    query = json.loads(json.dumps(QUERY))

    ours = synthbio_pipeline.predict_query(query, model_id="gem-1-bulk", seed=3, as_counts=True)
    theirs = pysynthbio.predict_query(json.loads(json.dumps(QUERY)), model_id="gem-1-bulk", seed=3)

    assert list(ours) == list(theirs) == ["metadata", "expression", "latents"]
    for key in theirs:
        pd.testing.assert_frame_equal(ours[key], theirs[key])
    pd.testing.assert_frame_equal(ours["expression"], transform_arrow_stream(data)["expression"])
    assert ours["expression"].shape == (4, 3) and ours["expression"].iloc[3, 2] == 16_777_217
    mine, vendor = server.requests
    assert mine.path == vendor.path == "/api/models/gem-1-bulk/predict"
    assert mine.headers["Accept"] == vendor.headers["Accept"] == ARROW
    assert mine.headers["Content-Type"] == "application/json"
    assert "Authorization" not in mine.headers and "Authorization" not in vendor.headers
    assert json.loads(mine.body) == {**QUERY, "seed": 3, "source": "synthbio-pipeline"}  # as_counts is ours
    assert query == QUERY


def test_a_prediction_with_a_token_sends_it_and_log_cpm_is_ours(server, monkeypatch):
    data = serve_prediction(server, "gem-2-bulk")
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    result = synthbio_pipeline.predict_query(
        {"inputs": {"modality": "bulk", "items": []}},
        "gem-2-bulk",
        as_counts=False,
        api_base_url=server.url,
        self_hosted=True,
    )
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    pd.testing.assert_frame_equal(
        result["expression"], synthbio_pipeline.log_cpm(transform_arrow_stream(data)["expression"])
    )


def test_raw_response_is_the_stream_and_a_download_url_is_refused(server):
    data = serve_prediction(server)
    assert (
        synthbio_pipeline.predict_query(
            QUERY, "gem-1-bulk", raw_response=True, api_base_url=server.url, self_hosted=True
        )
        == data
    )
    with pytest.raises(ValueError, match="not supported in self-hosted mode"):
        synthbio_pipeline.predict_query(
            QUERY, "gem-1-bulk", return_download_url=True, api_base_url=server.url, self_hosted=True
        )
    assert server.count("POST") == 1


def test_the_seed_style_query_goes_self_hosted_too(server):
    serve_prediction(server)
    query = synthbio_pipeline.get_valid_query("bulk")
    result = synthbio_pipeline.predict_query(query, api_base_url=server.url, self_hosted=True)
    assert result["expression"].shape == (4, 3)
    assert json.loads(server.requests[0].body)["sampling_strategy"] == "sample generation"


def test_models_and_example_query_need_no_token(server, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_SELF_HOSTED", "yes")
    models = {"models": [{"model_id": "gem-1-bulk"}]}
    example = {"example_query": QUERY}
    server.answer("GET", "/api/models", (200, {}, models))
    server.answer("GET", "/api/models/gem-1-bulk/example-query", (200, {}, example))
    assert synthbio_pipeline.list_models(api_base_url=server.url) == models
    assert synthbio_pipeline.get_example_query("gem-1-bulk", api_base_url=server.url) == example
    assert all("Authorization" not in r.headers for r in server.requests)
    with pytest.raises(KeyError):  # the hosted API needs one
        synthbio_pipeline.list_models(api_base_url=server.url, self_hosted=False)


@pytest.mark.parametrize(
    "status, exception", [(401, errors.AuthenticationError), (404, errors.NotFoundError), (422, errors.ValidationError)]
)
def test_error_answers_are_typed_and_not_retried(server, status, exception):
    server.answer(
        "POST",
        "/api/models/gem-1-bulk/predict",
        (status, {}, {"error": "no", "errors": [{"path": "inputs", "message": "bad"}]}),
    )
    with pytest.raises(exception) as caught:
        synthbio_pipeline.predict_query(QUERY, "gem-1-bulk", api_base_url=server.url, self_hosted=True)
    assert caught.value.status_code == status and server.count("POST") == 1


def test_a_busy_container_is_asked_again_and_a_broken_stream_is_an_error(server):
    data = arrow_stream(rows=40, batch_rows=5)
    server.answer(
        "POST", "/api/models/gem-1-bulk/predict", (503, {"Retry-After": "0"}, {"error": "busy"}), (200, {}, data)
    )
    with SelfHostedClient(server.url) as client:
        assert synthbio_pipeline.predict_query(QUERY, "gem-1-bulk", api_base_url=server.url, self_hosted=True)[
            "expression"
        ].shape == (40, 3)
        assert server.count("POST") == 2
        server.answer(
            "POST", "/api/models/gem-1-bulk/predict", (200, {"Claim-Length": str(len(data))}, data[: len(data) // 2])
        )
        with pytest.raises(errors.APIConnectionError, match="broke off"):
            with client.predict_stream("gem-1-bulk", QUERY) as body:
                arrow_to_frames(body)
    assert server.count("POST") == 3  # a prediction whose answer broke off is never repeated


# --- plain http to a listed host -------------------------------------------------------------


def test_allowed_http_hosts_rules():
    with pytest.raises(errors.InsecureURLError, match="allowed_http_hosts"):
        check_base_url("http://gpu-box:8080")
    assert check_base_url("http://gpu-box:8080", allowed_http_hosts=["GPU-Box"]) == "http://gpu-box:8080"
    assert check_base_url("http://10.0.0.5", allowed_http_hosts="10.0.0.5") == "http://10.0.0.5"
    assert check_base_url("http://[fd00::5]:80", allowed_http_hosts=["fd00::5"])
    with pytest.raises(errors.InsecureURLError):
        check_base_url("http://gpu-box.evil:8080", allowed_http_hosts=["gpu-box"])
    for entry in ("http://gpu-box", "gpu-box:8080", "gpu-box/api", ""):
        with pytest.raises(errors.InsecureURLError, match="not a host name"):
            check_base_url("http://gpu-box", allowed_http_hosts=[entry])
    assert token_may_travel("https://x.example") and token_may_travel("http://127.0.0.1:9")
    assert not token_may_travel("http://gpu-box") and token_may_travel("http://gpu-box", send_token_over_http=True)
    with pytest.raises(errors.InsecureURLError, match="send_token_over_http"):  # the hosted API needs the token
        SynthesizeClient("http://gpu-box", allowed_http_hosts=["gpu-box"])
    SynthesizeClient("http://gpu-box", allowed_http_hosts=["gpu-box"], send_token_over_http=True).close()
    SelfHostedClient("http://gpu-box", allowed_http_hosts=["gpu-box"]).close()


def local_address() -> str | None:
    """This machine's address on a non-loopback interface (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest.fixture
def lan_server():
    address = local_address()
    if address is None:
        pytest.skip("no non-loopback interface to serve plain http on")
    state, httpd = serve(address)
    state.host = address
    yield state
    httpd.shutdown()


def test_plain_http_to_a_listed_host_carries_the_token_only_when_told(lan_server, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    serve_prediction(lan_server)
    with pytest.raises(errors.InsecureURLError):
        synthbio_pipeline.predict_query(QUERY, "gem-1-bulk", api_base_url=lan_server.url, self_hosted=True)
    assert lan_server.requests == []
    listed = {"api_base_url": lan_server.url, "self_hosted": True, "allowed_http_hosts": [lan_server.host]}
    assert synthbio_pipeline.predict_query(QUERY, "gem-1-bulk", **listed)["expression"].shape == (4, 3)
    assert "Authorization" not in lan_server.requests[-1].headers
    synthbio_pipeline.predict_query(QUERY, "gem-1-bulk", send_token_over_http=True, **listed)
    assert lan_server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    lan_server.answer("GET", "/api/models", (200, {}, {"models": []}))
    with pytest.raises(errors.InsecureURLError):  # hosted: the token would have to travel in clear text
        synthbio_pipeline.list_models(api_base_url=lan_server.url, allowed_http_hosts=[lan_server.host])
    assert synthbio_pipeline.list_models(
        api_base_url=lan_server.url, allowed_http_hosts=[lan_server.host], send_token_over_http=True
    ) == {"models": []}
    assert lan_server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_the_preflight_says_a_token_was_withheld_not_refused_over_plain_http(lan_server, monkeypatch):
    from synthbio_pipeline.pipeline.preflight import service_problem

    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    lan_server.answer("GET", "/api/models", (401, {}, {"detail": "token needed"}))
    options = {"self_hosted": True, "allowed_http_hosts": [lan_server.host]}
    problem = service_problem(lan_server.url, ["gem-1-bulk"], **options)
    assert "asks for a token (401), which is not sent over plain http" in problem, problem
    assert "send_token_over_http: true" in problem
    problem = service_problem(lan_server.url, ["gem-1-bulk"], send_token_over_http=True, **options)
    assert problem.startswith("the token was refused by"), problem  # it was sent, and refused
    assert lan_server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


# --- the download limits bound a self-hosted stream too ---------------------------------------


def run_container_query(server, tmp_path, limits, body=QUERY, **options):
    from synthbio_pipeline.pipeline.runner import run_prediction

    out = tmp_path / "parts"
    query = tmp_path.with_name(f"{tmp_path.name}.liver.json")  # beside the folder the parts go to
    query.write_text(json.dumps(body))
    return run_prediction(
        query,
        model_id="gem-1-bulk",
        condition="liver",
        expression_out=out / "liver.expression.parquet",
        metadata_out=out / "liver.metadata.parquet",
        self_hosted=True,
        base_url=server.url,
        download_limits=limits,
        **options,
    )


def test_a_stream_larger_than_the_download_limit_stops_and_leaves_nothing(server, tmp_path):
    small = arrow_stream(rows=4)
    # The limit for the 4 samples asked: a little more than the 4-sample stream takes.
    limits = DownloadLimits(fixed_bytes=len(small) + 64, genes=3, bytes_per_value=1)
    serve_prediction(server, data=small)
    summary = run_container_query(server, tmp_path, limits)
    assert summary["samples"] == 4 and summary["self_hosted"]

    big = arrow_stream(rows=4_000, batch_rows=50)
    assert len(big) > 10 * limits.max_bytes(4)
    serve_prediction(server, data=big)
    with pytest.raises(errors.DownloadRefusedError) as caught:
        run_container_query(server, tmp_path / "big", limits)
    assert caught.value.limit == "size"
    message = str(caught.value)
    assert "larger than the download limit" in message and "4 sample(s)" in message
    assert "download.bytes_per_value" in message and "Nothing was kept" in message
    assert not [p for p in (tmp_path / "big").rglob("*") if p.is_file()], "a half-written part was left"
    assert server.count("POST") == 2  # refused, not asked again


def test_a_gzip_stream_is_counted_raw_and_decoded(server):
    data = arrow_stream(rows=2_000, batch_rows=100)
    packed = gzip.compress(data)
    assert len(packed) * 4 < len(data)
    limits = DownloadLimits(fixed_bytes=len(packed) + 1024, genes=1, bytes_per_value=1)
    server.answer("POST", "/api/models/gem-1-bulk/predict", (200, {"Content-Encoding": "gzip"}, packed))
    with SelfHostedClient(server.url, download_limits=limits) as client:
        with pytest.raises(errors.DownloadRefusedError, match="decodes to more than") as caught:
            with client.predict_stream("gem-1-bulk", QUERY) as body:
                arrow_to_frames(body)
    assert caught.value.limit == "size"
    # Within a limit it reads as it should, and both counts are kept.
    roomy = DownloadLimits(fixed_bytes=2 * len(data), genes=1, bytes_per_value=1)
    with SelfHostedClient(server.url, download_limits=roomy) as client:
        with client.predict_stream("gem-1-bulk", QUERY) as body:
            assert arrow_to_frames(body)["expression"].shape == (2_000, 3)
        assert body.bytes_read == len(data) and body.raw_bytes == len(packed)


def test_a_trickling_stream_stops_at_the_deadline(server, tmp_path):
    data = arrow_stream(rows=40, batch_rows=5)

    def trickle():
        for offset in range(0, len(data), 64):
            time.sleep(0.1)  # well within the read timeout, far past the deadline in total
            yield data[offset : offset + 64]

    server.answer("POST", "/api/models/gem-1-bulk/predict", (200, {"Content-Type": ARROW}, trickle()))
    limits = DownloadLimits(deadline_seconds=0.8)
    started = time.monotonic()
    with pytest.raises(errors.DownloadRefusedError) as caught:
        run_container_query(server, tmp_path, limits)
    elapsed = time.monotonic() - started
    assert caught.value.limit == "deadline"
    assert "deadline of 0.8 s" in str(caught.value) and "download.deadline_seconds" in str(caught.value)
    assert 0.8 <= elapsed < 3, elapsed
    assert len(data) / 64 * 0.1 > 3  # the whole trickle would have taken longer
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
