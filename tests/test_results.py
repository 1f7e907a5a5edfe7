"""The streaming result parser: every counts shape, layout, error, and equality with pysynthbio."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import signal

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from pysynthbio.output_transformers import transform_metadata_model_output, transform_standard_model_output

from synthbio_pipeline.errors import ResultError
from synthbio_pipeline.formats.result_json import DEFAULT_CHUNK_SIZE, Sample, log_cpm, open_result, to_frames

GENES = ["ENSG01", "ENSG02", "ENSG03", "ENSG04"]
#: Tiny chunks put a buffer boundary inside every token of the small documents.
CHUNK_SIZES = [1, 3, 17, DEFAULT_CHUNK_SIZE]


def write(tmp_path, doc, name="result.json", **dumps):
    path = tmp_path / name
    text = doc if isinstance(doc, (str, bytes)) else json.dumps(doc, **dumps)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def read_all(source, **kwargs) -> list[Sample]:
    expected = kwargs.pop("expected_samples", None)
    with open_result(source, **kwargs) as reader:
        return list(reader.samples(expected_samples=expected))


def basic_doc(**extra):
    """A small bulk result; ``extra`` top-level keys come before ``outputs``."""
    doc = {
        "gene_order": GENES,
        "model_version": 2,
        **extra,
        "outputs": [
            {"counts": [0, 12, 5, 7], "metadata": {"sex": "male", "age_years": "40"}},
            {"counts": [1, 0, 0, 3], "metadata": {"sex": "female", "age_years": "41"}},
        ],
    }
    return doc


@contextlib.contextmanager
def deadline(seconds=20):
    """Fail instead of hanging (the parser must never loop on a bad document)."""

    def expire(signum, frame):
        raise AssertionError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_list_counts_and_header(tmp_path, chunk_size):
    path = write(tmp_path, basic_doc(emulator=True, seed=11))
    with open_result(path, chunk_size=chunk_size) as reader:
        assert reader.gene_order == GENES
        assert reader.n_genes == 4
        assert reader.model_version == 2
        assert reader.top_level == {"emulator": True, "seed": 11}
        samples = list(reader.samples())
    assert [s.counts.tolist() for s in samples] == [[0, 12, 5, 7], [1, 0, 0, 3]]
    assert all(s.counts.dtype == np.int64 for s in samples)
    assert samples[0].metadata == {"sex": "male", "age_years": "40"}
    assert samples[0].latents is None and samples[0].extra == {}


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_wrapped_and_sparse_counts(tmp_path, chunk_size):
    doc = {
        "gene_order": GENES,
        "outputs": [
            {"counts": {"counts": [1, 2, 3, 4]}, "metadata": {}},
            {"counts": {"ENSG03": 9, "ENSG01": 2}, "metadata": {}},
            {"counts": {}, "metadata": {}},
            {"counts": {"ignored": 1, "counts": [4, 3, 2, 1]}},  # the vendor reads the list
            {"counts": {"counts": [5, 6, 7, 8], "other": {"x": [1]}}},
        ],
    }
    samples = read_all(write(tmp_path, doc), chunk_size=chunk_size)
    assert [s.counts.tolist() for s in samples] == [
        [1, 2, 3, 4],
        [2, 0, 9, 0],
        [0, 0, 0, 0],
        [4, 3, 2, 1],
        [5, 6, 7, 8],
    ]
    assert samples[3].metadata == {}


def test_sparse_counts_with_duplicate_gene_ids_fill_both_columns(tmp_path):
    doc = {"gene_order": ["a", "b", "a"], "outputs": [{"counts": {"a": 3, "b": 1}}]}
    assert read_all(write(tmp_path, doc))[0].counts.tolist() == [3, 1, 3]


def test_sparse_cells_scatter_into_numpy_with_one_gene_lookup_per_reader(tmp_path):
    """A single-cell output names a few genes of many: only those are decoded, and the gene ->
    column lookup is built once for the document, not a dense mapping per cell."""
    genes = [f"G{i}" for i in range(50_000)]
    doc = {"gene_order": genes, "outputs": [{"counts": {"G49999": 7, "G3": 1}}, {"counts": {"G10": 2}}]}
    with open_result(write(tmp_path, doc)) as reader:
        samples = iter(reader.samples())
        first = next(samples)
        lookup = reader._outputs._lookup
        second = next(samples)
        assert reader._outputs._lookup is lookup
    assert first.counts.dtype == np.int64 and first.counts.shape == (50_000,)
    assert np.flatnonzero(first.counts).tolist() == [3, 49_999] and first.counts[49_999] == 7
    assert np.flatnonzero(second.counts).tolist() == [10] and second.counts.sum() == 2


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_metadata_prediction_outputs_use_the_decoder_sample(tmp_path, chunk_size):
    doc = {
        "gene_order": GENES,
        "outputs": [
            {
                "metadata": {"sex": "male"},
                "classifier_probs": {"sex": {"male": 0.9, "female": 0.1}},
                "latents": {"biological": [0.5, -1.0]},
                "decoder_sample": {"counts": [3, 2, 1, 0]},
            },
            {"decoder_sample": {"counts": [1, 1, 1, 1], "total_count": 4}, "metadata": {}},
            {"counts": [9, 9, 9, 9], "decoder_sample": {"counts": [0, 0, 0, 0]}},
        ],
    }
    samples = read_all(write(tmp_path, doc), chunk_size=chunk_size)
    assert samples[0].counts.tolist() == [3, 2, 1, 0]
    assert samples[0].extra == {"classifier_probs": {"sex": {"male": 0.9, "female": 0.1}}}
    assert samples[0].latents == {"biological": [0.5, -1.0]}
    assert samples[1].extra == {"decoder_sample": {"total_count": 4}}
    assert samples[2].counts.tolist() == [9, 9, 9, 9]  # "counts" wins over the decoder sample


def test_latents_present_and_absent(tmp_path):
    doc = basic_doc()
    doc["outputs"][0]["latents"] = {"biological": [0.25, 1e-3], "technical": [], "perturbation": [-2.5]}
    samples = read_all(write(tmp_path, doc))
    assert samples[0].latents == {"biological": [0.25, 1e-3], "technical": [], "perturbation": [-2.5]}
    assert samples[1].latents is None


def test_other_output_keys_go_to_extra(tmp_path):
    doc = basic_doc()
    doc["outputs"][1]["note"] = {"a": [1, {"b": None}]}
    doc["outputs"][1]["flag"] = False
    assert read_all(write(tmp_path, doc))[1].extra == {"note": {"a": [1, {"b": None}]}, "flag": False}


def test_float_counts_are_truncated_like_the_vendor_client(tmp_path):
    counts = [1.9, -1.9, 2e3, 0.5]
    doc = {"gene_order": GENES, "outputs": [{"counts": counts}, {"counts": {"ENSG02": 7.99}}]}
    samples = read_all(write(tmp_path, doc))
    assert samples[0].counts.tolist() == [1, -1, 2000, 0]
    assert samples[0].counts.tolist() == pd.DataFrame([counts]).astype(int).iloc[0].tolist()
    assert samples[1].counts.tolist() == [0, 7, 0, 0]
    assert samples[0].counts.dtype == np.int64


def test_mixed_int_and_float_counts(tmp_path):
    path = write(tmp_path, '{"gene_order": ["a", "b", "c"], "outputs": [{"counts": [1, 2.5, 1E2]}]}')
    assert read_all(path)[0].counts.tolist() == [1, 2, 100]


def test_empty_outputs_and_empty_gene_order(tmp_path):
    assert read_all(write(tmp_path, {"gene_order": GENES, "outputs": []})) == []
    samples = read_all(write(tmp_path, {"gene_order": [], "outputs": [{"counts": []}, {"counts": {}}]}))
    assert [len(s.counts) for s in samples] == [0, 0]


# --- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("indent", [None, 0, 2, "\t"])
@pytest.mark.parametrize("chunk_size", [1, 7, DEFAULT_CHUNK_SIZE])
def test_pretty_printed_documents(tmp_path, indent, chunk_size):
    doc = basic_doc()
    doc["outputs"][0]["latents"] = {"biological": [0.1, 0.2]}
    doc["outputs"].append({"counts": {"counts": [1, 1, 1, 1]}, "metadata": {"k": "v"}})
    doc["outputs"].append({"counts": {"ENSG04": 4}, "metadata": {"k": "w"}})
    samples = read_all(write(tmp_path, doc, indent=indent), chunk_size=chunk_size)
    assert [s.counts.tolist() for s in samples] == [[0, 12, 5, 7], [1, 0, 0, 3], [1, 1, 1, 1], [0, 0, 0, 4]]
    assert samples[0].latents == {"biological": [0.1, 0.2]}


def test_whitespace_everywhere_json_allows_it(tmp_path):
    ws = " \t\r\n "
    text = (
        f'{ws}{{{ws}"gene_order"{ws}:{ws}[{ws}"a"{ws},{ws}"b"{ws},{ws}"c"{ws}]{ws},{ws}'
        f'"outputs"{ws}:{ws}[{ws}{{{ws}"counts"{ws}:{ws}[{ws}1{ws},{ws}2{ws},{ws}3{ws}]{ws},{ws}'
        f'"metadata"{ws}:{ws}{{{ws}"x"{ws}:{ws}"y"{ws}}}{ws}}}{ws},{ws}'
        f'{{{ws}"counts"{ws}:{ws}{{{ws}"counts"{ws}:{ws}[{ws}4.5{ws},{ws}5{ws},{ws}6{ws}]{ws}}}{ws}}}{ws},{ws}'
        f'{{{ws}"counts"{ws}:{ws}{{{ws}"b"{ws}:{ws}2{ws}}}{ws}}}{ws}]{ws}}}{ws}'
    )
    for chunk_size in CHUNK_SIZES:
        samples = read_all(write(tmp_path, text), chunk_size=chunk_size)
        assert [s.counts.tolist() for s in samples] == [[1, 2, 3], [4, 5, 6], [0, 2, 0]]
        assert samples[0].metadata == {"x": "y"}


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_metadata_strings_with_brackets_quotes_and_unicode(tmp_path, ensure_ascii, chunk_size):
    tricky = {
        "a]": 'x]y}z"w\\',
        "b{": "[{]}",
        'quote"key': '\u00e9\u4e2d\U0001f9ec \\" ] }',
        "nested": {"list": ["]", "}", "[", "{", '"'], "n": None},
        "empty": "",
    }
    doc = {
        "gene_order": ["g]1", 'g"2', "g}3"],
        "note": "outputs ] } [ {",
        "outputs": [
            {"metadata": tricky, "counts": [1, 2, 3], "latents": {"b]": [1.5]}},
            {"counts": {'g"2': 5, "g}3": 1}, "metadata": {"s": "\\"}},
        ],
    }
    path = write(tmp_path, doc, ensure_ascii=ensure_ascii)
    with open_result(path, chunk_size=chunk_size) as reader:
        assert reader.gene_order == ["g]1", 'g"2', "g}3"]
        assert reader.top_level == {"note": "outputs ] } [ {"}
        samples = list(reader.samples())
    assert samples[0].metadata == tricky
    assert samples[0].latents == {"b]": [1.5]}
    assert samples[1].counts.tolist() == [0, 5, 1]
    assert samples[1].metadata == {"s": "\\"}


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_gene_order_after_outputs_is_read_first(tmp_path, chunk_size):
    doc = {
        "model_version": "v2",
        "outputs": [
            {"counts": [1, 2, 3, 4], "metadata": {"i": 0}},
            {"counts": {"counts": [5, 6, 7, 8]}, "metadata": {"i": 1}},
            {"counts": {"ENSG02": 2}, "metadata": {"i": 2}},
        ],
        "gene_order": GENES,
        "after": [1, 2],
    }
    path = write(tmp_path, doc, indent=1)
    with open_result(path, chunk_size=chunk_size) as reader:
        assert reader.gene_order == GENES
        assert reader.model_version == "v2"
        assert reader.top_level == {"after": [1, 2]}
        samples = list(reader.samples(expected_samples=3))
    assert [s.counts.tolist() for s in samples] == [[1, 2, 3, 4], [5, 6, 7, 8], [0, 2, 0, 0]]
    assert [s.metadata["i"] for s in samples] == [0, 1, 2]
    # A file object works too (it is left open).
    with path.open("rb") as f:
        assert [s.counts.tolist() for s in read_all(f, chunk_size=chunk_size)][2] == [0, 2, 0, 0]
        assert not f.closed


def test_gene_order_after_outputs_needs_a_seekable_source(tmp_path):
    text = json.dumps({"outputs": [{"counts": [1]}], "gene_order": ["a"]}).encode()

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.data.readinto(b)

    with pytest.raises(ResultError, match="not seekable"):
        open_result(Pipe(text))
    # gene_order first streams from a pipe without seeking.
    text = json.dumps({"gene_order": ["a"], "outputs": [{"counts": [1]}]}).encode()
    assert read_all(Pipe(text))[0].counts.tolist() == [1]


def test_keys_after_outputs_join_top_level_once_read(tmp_path):
    path = write(tmp_path, basic_doc() | {"trailer": {"x": 1}})
    with open_result(path) as reader:
        assert "trailer" not in reader.top_level
        assert len(list(reader.samples())) == 2
        assert reader.top_level == {"trailer": {"x": 1}}


def test_samples_can_be_read_again(tmp_path):
    path = write(tmp_path, basic_doc())
    with open_result(path) as reader:
        first = [s.counts.tolist() for s in reader.samples()]
        again = [s.counts.tolist() for s in reader]
        iterator = reader.samples()
        next(iterator)
        third = [s.counts.tolist() for s in reader.samples()]  # abandons the half-read pass
    assert first == again == third == [[0, 12, 5, 7], [1, 0, 0, 3]]


def test_path_source_is_closed_by_the_context_manager(tmp_path):
    path = write(tmp_path, basic_doc())
    with open_result(str(path)) as reader:
        pass
    assert reader._file.closed


def test_text_file_is_refused(tmp_path):
    path = write(tmp_path, basic_doc())
    with path.open("r") as f, pytest.raises(TypeError, match="binary"):
        open_result(f)


def test_long_values_across_many_small_chunks(tmp_path):
    rng = np.random.default_rng(3)
    genes = [f"ENSG{i:011d}" for i in range(5000)]
    rows = rng.integers(0, 100_000, size=(3, len(genes)))
    doc = {
        "gene_order": genes,
        "outputs": [
            {"counts": rows[0].tolist(), "metadata": {"m": "x" * 5000}},
            {"counts": {"counts": rows[1].tolist()}},
            {"counts": {g: int(v) for g, v in zip(genes, rows[2]) if v % 3}},
        ],
    }
    sparse = np.where(rows[2] % 3 != 0, rows[2], 0)
    for chunk_size in (16, 4096):
        samples = read_all(write(tmp_path, doc), chunk_size=chunk_size)
        np.testing.assert_array_equal(samples[0].counts, rows[0])
        np.testing.assert_array_equal(samples[1].counts, rows[1])
        np.testing.assert_array_equal(samples[2].counts, sparse)
        assert samples[0].metadata == {"m": "x" * 5000}


def test_buffer_stays_bounded_by_one_output(tmp_path):
    genes = [f"ENSG{i:011d}" for i in range(3000)]
    rng = np.random.default_rng(1)
    outputs = [{"counts": rng.integers(0, 10**6, size=len(genes)).tolist(), "metadata": {"i": i}} for i in range(60)]
    path = write(tmp_path, {"gene_order": genes, "outputs": outputs})
    one_output = len(json.dumps(outputs[0]))
    chunk_size = 4096
    largest = 0
    with open_result(path, chunk_size=chunk_size) as reader:
        for _sample in reader.samples(expected_samples=60):
            largest = max(largest, len(reader._scanner.buf))
    assert path.stat().st_size > 20 * one_output
    assert largest <= 2 * (one_output + chunk_size)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["error", "errors"])
def test_error_payload(tmp_path, key):
    content = "model crashed" if key == "error" else [{"path": "inputs[0]", "message": "bad"}]
    with pytest.raises(ResultError, match="the result is an error: .*(model crashed|inputs\\[0\\])"):
        open_result(write(tmp_path, {key: content}))
    # Even next to a complete result.
    with pytest.raises(ResultError, match="the result is an error"):
        open_result(write(tmp_path, {key: content} | basic_doc()))


def test_error_after_the_outputs_raises_at_the_end(tmp_path):
    path = write(tmp_path, basic_doc() | {"error": "late failure"})
    with open_result(path) as reader, pytest.raises(ResultError, match="late failure"):
        list(reader.samples())


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"outputs": []}, "no gene_order"),
        ({"gene_order": GENES}, "no outputs"),
        ({}, "no gene_order"),
        ({"gene_order": GENES, "outputs": {"a": 1}}, "'outputs' is not a list"),
        ({"gene_order": GENES, "outputs": None}, "'outputs' is not a list"),
        ({"gene_order": "ENSG01", "outputs": []}, "gene_order is not a list"),
        ({"gene_order": [1, 2], "outputs": []}, "gene_order is not a list"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_structure_errors(tmp_path, doc, message):
    with pytest.raises(ResultError, match=message):
        read_all(write(tmp_path, doc))


@pytest.mark.parametrize(
    "output, message",
    [
        ({"counts": [1, 2, 3]}, r"output 1: the counts has 3 values but gene_order has 4 genes \(at byte \d+\)"),
        ({"counts": [1, 2, 3, 4, 5]}, "output 1: .* 5 values .* 4 genes"),
        ({"counts": {"counts": [1]}}, "output 1: .* 1 values"),
        ({"counts": {"x": 1, "counts": [1]}}, "output 1: .* 1 values"),
        ({"decoder_sample": {"counts": [1, 2]}}, "output 1: the decoder_sample counts has 2 values"),
        ({"counts": {"ENSG99": 1}}, "output 1: .*'ENSG99', which is not in gene_order"),
        ({"counts": [1, True, 3, 4]}, "output 1: the counts item 1 is not a number: 'true'"),
        ({"counts": [1, None, 3, 4]}, "item 1 is not a number: 'null'"),
        ({"counts": [1, 2, "3", 4]}, "item 2 is not a number: '\"3\"'"),
        ({"counts": [1, 2, [3], 4]}, "not a number"),
        ({"counts": [1, 2, {"a": 3}, 4]}, "not a number"),
        ({"counts": [1, 2, math.nan, 4]}, "item 2 is nan, not a finite number"),
        ({"counts": [1, 2, math.inf, 4]}, "not a finite number"),
        ({"counts": [1, 2, 2**70, 4]}, "outside the int64 range"),
        ({"counts": {"ENSG01": True}}, "item 0 is not a number: True"),
        ({"counts": {"ENSG01": "7"}}, "item 0 is not a number: '7'"),
        ({"counts": {"ENSG01": None}}, "not a number"),
        ({"counts": {"ENSG01": math.nan}}, "not a finite number"),
        ({"counts": {"ENSG01": 2**70}}, "outside the int64 range"),
        ({"counts": "1,2,3,4"}, "neither a list nor an object"),
        ({"counts": None}, "neither a list nor an object"),
        ({"counts": {"counts": {"ENSG01": 1}}}, "counts.counts is not a list"),
        ({"metadata": {}}, "output 1 has no counts"),
        ({"counts": [1, 2, 3, 4], "metadata": [1]}, "metadata of output 1 is not a JSON object"),
        ({"counts": [1, 2, 3, 4], "latents": "x"}, "latents of output 1 are not a JSON object"),
    ],
)
def test_bad_outputs(tmp_path, output, message):
    doc = {"gene_order": GENES, "outputs": [{"counts": [0, 0, 0, 0]}, output]}
    with open_result(write(tmp_path, doc)) as reader:
        samples = reader.samples()
        assert next(samples).counts.tolist() == [0, 0, 0, 0]
        with pytest.raises(ResultError, match=message):
            next(samples)


def test_bad_output_that_is_not_an_object(tmp_path):
    with pytest.raises(ResultError, match="output 0 is not a JSON object"):
        read_all(write(tmp_path, {"gene_order": GENES, "outputs": [[1, 2, 3, 4]]}))


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"gene_order": ["a"], "outputs": [{"counts": [1,]}]}', "trailing comma"),
        ('{"gene_order": ["a"], "outputs": [{"counts": [,1]}]}', "item 0 is not a number: ''"),
        ('{"gene_order": ["a", "b"], "outputs": [{"counts": [1 2]}]}', "not a number: '1 2'"),
        ('{"gene_order": ["a", "b"], "outputs": [{"counts": [1,,2]}]}', "item 1 is not a number"),
        ('{"gene_order": ["a"], "outputs": [{"counts": [1]} {"counts": [2]}]}', "expected ',' or ']'"),
        ('{"gene_order": ["a"] "outputs": []}', "expected ',' or '}'"),
        ('{"gene_order": ["a"], "outputs": [{"counts": [1]}]} x', "unexpected data after the end"),
        ('{"gene_order": ["a"], "outputs": []}{}', "unexpected data after the end"),
        (
            '{"gene_order": ["a"], "outputs": [{"counts": [1], "metadata": {"a": tru}}]}',
            "malformed JSON in the metadata",
        ),
        ('{"gene_order": ["a"], "outputs": [{"counts": [1], "metadata": {"a" 1}}]}', "malformed JSON in the metadata"),
        (
            '{"gene_order": ["a"], "outputs": [{"counts": [1], "latents": {"a": [1,]}}]}',
            "malformed JSON in the latents",
        ),
        ('{"gene_order": ["a"], "outputs": [{counts: [1]}]}', "expected a key in output 0"),
        ('{"gene_order": ["a"], "outputs": [{"counts" [1]}]}', "expected ':'"),
        ('{"gene_order": ["a",], "outputs": []}', "malformed JSON in gene_order"),
        ('{"gene_order": ["a"], "outputs": [{"counts": {"a" 1}}]}', "malformed JSON in the counts"),
        ('{"gene_order": ["a"], "outputs": [{"counts": [1]}], "outputs": []}', "two 'outputs' keys"),
        ("", "empty"),
        ("   \n", "ends early"),
    ],
)
def test_malformed_json_names_the_byte_offset(tmp_path, text, message):
    with pytest.raises(ResultError, match=message) as caught:
        read_all(write(tmp_path, text))
    assert "byte" in str(caught.value) or message == "empty"


def test_error_offsets_point_at_the_problem(tmp_path):
    text = '{"gene_order": ["a", "b"], "outputs": [{"counts": [1, true]}]}'
    with pytest.raises(ResultError, match=f"at byte {text.index('true')}"):
        read_all(write(tmp_path, text))
    text = '{"gene_order": ["a"], "outputs": [{"counts": [1]}], oops}'
    with pytest.raises(ResultError, match=f"at byte {text.index('oops')}"):
        read_all(write(tmp_path, text))


def test_expected_samples(tmp_path):
    path = write(tmp_path, basic_doc())
    assert len(read_all(path, expected_samples=2)) == 2
    with open_result(path, expected_samples=2) as reader:
        assert len(list(reader.samples())) == 2
    with pytest.raises(ResultError, match="2 outputs, 3 expected"):
        read_all(path, expected_samples=3)
    with open_result(path) as reader:
        samples = reader.samples(expected_samples=1)
        next(samples)
        with pytest.raises(ResultError, match="more outputs than the 1 expected"):
            next(samples)
    with pytest.raises(ResultError, match="2 outputs, 3 expected"):
        to_frames(path, expected_samples=3)
    with pytest.raises(ValueError):
        open_result(path).samples(expected_samples=-1)


@pytest.mark.parametrize("chunk_size", [1, 5, DEFAULT_CHUNK_SIZE])
def test_truncated_document_always_raises(tmp_path, chunk_size):
    doc = {
        "gene_order": ["a", "b", "c"],
        "model_version": 2,
        "outputs": [
            {"counts": [10, 200, 3], "metadata": {"s": ']}"'}, "latents": {"b": [0.5]}},
            {"counts": {"counts": [1.5, 2, 3]}},
            {"counts": {"b": 4}, "classifier_probs": {"x": {"y": 1}}},
        ],
        "tail": None,
    }
    for separators in ((",", ":"), (", ", ": ")):
        data = json.dumps(doc, separators=separators).encode()
        assert len(read_all(io.BytesIO(data), expected_samples=3)) == 3
        with deadline():
            for cut in range(len(data)):
                with pytest.raises(ResultError):
                    read_all(io.BytesIO(data[:cut]), chunk_size=chunk_size, expected_samples=3)
                with pytest.raises(ResultError):
                    to_frames(io.BytesIO(data[:cut]), chunk_size=chunk_size)


def test_truncated_message_names_the_offset(tmp_path):
    data = json.dumps(basic_doc()).encode()
    cut = data.index(b"12")
    with pytest.raises(ResultError, match=f"ends early at byte {cut}.*truncated"):
        read_all(write(tmp_path, data[:cut]))


def test_garbage_never_hangs(tmp_path):
    rng = random.Random(5)
    data = json.dumps(basic_doc() | {"tail": ["]", "}"]}).encode()
    with deadline():
        for _ in range(300):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.choice(b'[]{}",:\\ 0a')
            try:
                read_all(io.BytesIO(bytes(mutated)), chunk_size=rng.choice([1, 4, 1 << 20]))
            except ResultError:
                pass


# --- equality with the vendor's client ----------------------------------------------------------


def vendor_docs():
    rng = np.random.default_rng(7)
    genes = [f"ENSG{i:011d}" for i in range(50)]
    metadata = [{"sex": "male", "tissue_ontology_id": "UBERON:0001155", "age_years": str(30 + i)} for i in range(6)]
    rows = rng.integers(0, 5000, size=(6, len(genes)))
    latents = [
        {"biological": rng.standard_normal(4).tolist(), "technical": rng.standard_normal(2).tolist()} for _ in range(6)
    ]
    yield (
        "lists",
        {
            "gene_order": genes,
            "model_version": 2,
            "outputs": [
                {"counts": r.tolist(), "metadata": m, "latents": lat} for r, m, lat in zip(rows, metadata, latents)
            ],
        },
    )
    yield (
        "wrapped-no-latents",
        {
            "gene_order": genes,
            "outputs": [{"counts": {"counts": r.tolist()}, "metadata": m} for r, m in zip(rows, metadata)],
        },
    )
    yield (
        "sparse",
        {
            "gene_order": genes,
            "outputs": [
                {"counts": {g: int(v) for g, v in zip(genes, r) if v > 2500}, "metadata": m, "latents": lat}
                for r, m, lat in zip(rows, metadata, latents)
            ],
        },
    )
    yield (
        "floats-mixed-metadata",
        {
            "gene_order": genes,
            "outputs": [
                {"counts": (r / 7).tolist(), "metadata": m | ({"extra": i} if i % 2 else {})}
                for i, (r, m) in enumerate(zip(rows, metadata))
            ],
        },
    )
    yield (
        "mixed-shapes",
        {
            "gene_order": genes,
            "outputs": [
                {"counts": rows[0].tolist(), "metadata": metadata[0]},
                {"counts": {"counts": rows[1].tolist()}, "metadata": metadata[1]},
                {"counts": {genes[3]: 4}, "metadata": metadata[2]},
            ],
        },
    )
    yield "empty", {"gene_order": genes, "outputs": []}


@pytest.mark.parametrize("name, doc", list(vendor_docs()), ids=[name for name, _ in vendor_docs()])
@pytest.mark.parametrize("indent", [None, 2])
def test_frames_equal_pysynthbio(tmp_path, name, doc, indent):
    path = write(tmp_path, doc, indent=indent)
    with path.open() as f:
        theirs = transform_standard_model_output(json.load(f))
    ours = to_frames(path)
    assert set(ours) == set(theirs)
    assert_frame_equal(ours["expression"], theirs["expression"], check_dtype=name != "empty")
    assert ours["expression"].dtypes.eq(np.int64).all()
    assert_frame_equal(ours["metadata"], theirs["metadata"])
    assert_frame_equal(ours["latents"], theirs["latents"])


def test_metadata_prediction_frames_equal_pysynthbio(tmp_path):
    rng = np.random.default_rng(11)
    genes = [f"ENSG{i:011d}" for i in range(20)]
    outputs = []
    for i in range(4):
        outputs.append(
            {
                "metadata": {"sex": "female" if i % 2 else "male", "sample_type": "primary tissue"},
                "classifier_probs": {
                    "sex": {"male": 0.2 * i, "female": 1 - 0.2 * i},
                    "sample_type": {"primary tissue": 1.0},
                },
                "latents": {"biological": rng.standard_normal(3).tolist(), "technical": [0.0]},
                "decoder_sample": {"counts": rng.integers(0, 100, size=len(genes)).tolist()},
            }
        )
    doc = {"gene_order": genes, "model_version": 2, "outputs": outputs}
    path = write(tmp_path, doc, indent=2)
    theirs = transform_metadata_model_output(json.loads(path.read_text()))
    ours = to_frames(path, result_kind="metadata-prediction")
    assert set(ours) == {"metadata", "expression", "latents", "classifier_probs"}
    for key in theirs:
        assert_frame_equal(ours[key], theirs[key])


def test_to_frames_latents_rows_stay_aligned(tmp_path):
    doc = basic_doc()
    doc["outputs"][1]["latents"] = {"biological": [1.0]}
    frames = to_frames(write(tmp_path, doc))
    assert len(frames["latents"]) == 2
    assert frames["latents"]["biological"].iloc[1] == [1.0]
    assert frames["latents"]["biological"].isna().iloc[0]


def test_to_frames_rejects_unknown_result_kind(tmp_path):
    with pytest.raises(ValueError, match="result_kind"):
        to_frames(write(tmp_path, basic_doc()), result_kind="nope")


def test_to_frames_grows_past_its_estimate(tmp_path):
    # The first output is much larger than the others, so the size estimate is far too low.
    genes = [f"g{i}" for i in range(8)]
    outputs = [{"counts": list(range(8)), "metadata": {"pad": "x" * 50}}]
    outputs += [{"counts": {"g1": i}} for i in range(200)]
    frames = to_frames(write(tmp_path, {"gene_order": genes, "outputs": outputs}))
    assert frames["expression"].shape == (201, 8)
    assert frames["expression"]["g1"].tolist() == [1] + list(range(200))
    frames = to_frames(write(tmp_path, {"gene_order": genes, "outputs": outputs}), expected_samples=201)
    assert frames["expression"].shape == (201, 8)


def test_to_frames_as_log_cpm(tmp_path):
    path = write(tmp_path, basic_doc())
    counts = to_frames(path)["expression"]
    logged = to_frames(path, as_counts=False)["expression"]
    assert_frame_equal(logged, log_cpm(counts))
    assert logged.dtypes.eq(np.float64).all()


# --- log_cpm ---------------------------------------------------------------------------------


def test_log_cpm_values_and_zero_rows():
    counts = np.array([[1, 3, 0, 6], [0, 0, 0, 0], [5, 5, 5, 5]], dtype=np.int64)
    expected = np.log1p(counts / counts.sum(axis=1, keepdims=True).clip(1) * 1e6)
    result = log_cpm(counts)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=1e-15)
    assert (result[1] == 0).all() and not np.isnan(result).any()
    assert result[0, 0] == pytest.approx(math.log1p(1 / 10 * 1e6))
    assert counts.tolist()[0] == [1, 3, 0, 6]  # the input is untouched
    np.testing.assert_array_equal(log_cpm(counts[0]), result[0])


def test_log_cpm_keeps_dataframe_index_and_columns():
    frame = pd.DataFrame([[1.0, 1.0], [0.0, 0.0]], index=["s1", "s2"], columns=["g1", "g2"])
    result = log_cpm(frame)
    assert list(result.index) == ["s1", "s2"] and list(result.columns) == ["g1", "g2"]
    assert result.loc["s1", "g1"] == pytest.approx(math.log1p(5e5))
    assert (result.loc["s2"] == 0).all()
    assert frame.loc["s1", "g1"] == 1.0  # not modified in place
    with pytest.raises(ValueError):
        log_cpm(np.zeros((2, 2, 2)))


# --- property test: random documents against json.load -------------------------------------------

WHITESPACE = ["", "", "", " ", "\n", "\t", "\r\n", "  \n  "]
TRICKY_TEXT = ["]", "}", "[", "{", '"', "\\", ",", ":", "\u00e9", "\U0001f9ec", "counts", " ", "\n"]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(TRICKY_TEXT + ["a", "b", "1"]) for _ in range(rng.randint(0, 6)))


def dump(value, rng: random.Random) -> str:
    """JSON with random whitespace between all tokens and random escaping."""

    def ws():
        return rng.choice(WHITESPACE)

    if isinstance(value, dict):
        if not value:
            return "{" + ws() + "}"
        items = [ws() + dump(k, rng) + ws() + ":" + ws() + dump(v, rng) + ws() for k, v in value.items()]
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        if not value:
            return "[" + ws() + "]"
        return "[" + ",".join(ws() + dump(v, rng) + ws() for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=rng.random() < 0.5)
    return json.dumps(value)


def random_metadata(rng):
    return {
        random_text(rng): rng.choice(
            [random_text(rng), rng.randint(-5, 5), None, [random_text(rng)], {"k": random_text(rng)}]
        )
        for _ in range(rng.randint(0, 4))
    }


def random_counts(rng, genes):
    floats = rng.random() < 0.2
    values = [
        rng.uniform(0, 1e4) if floats else rng.choice([0, 0, rng.randint(0, 10 ** rng.randint(1, 12))]) for _ in genes
    ]
    shape = rng.choice(["list", "wrapped", "sparse"])
    if shape == "list":
        return values
    if shape == "wrapped":
        return {"counts": values}
    return {g: v for g, v in zip(genes, values) if v and rng.random() < 0.6}


def random_document(rng: random.Random):
    suffixes = ["", "]", "}", '"', "\u00e9"]
    genes = list(dict.fromkeys(f"G{rng.randint(0, 999)}" + rng.choice(suffixes) for _ in range(rng.randint(0, 12))))
    outputs = []
    for _ in range(rng.randint(0, 6)):
        output = {}
        if rng.random() < 0.8:
            output["metadata"] = random_metadata(rng)
        if rng.random() < 0.2:
            output["decoder_sample"] = {"counts": random_counts(rng, genes)} | (
                {"extra": random_text(rng)} if rng.random() < 0.5 else {}
            )
            if rng.random() < 0.5:
                output["classifier_probs"] = {"sex": {"male": rng.random()}}
        if "decoder_sample" not in output or rng.random() < 0.3:
            output["counts"] = random_counts(rng, genes)
        if rng.random() < 0.5:
            output["latents"] = {
                k: [rng.gauss(0, 1) for _ in range(rng.randint(0, 3))] for k in ("biological", "technical")
            }
        if rng.random() < 0.2:
            output[random_text(rng) + "x"] = random_metadata(rng)
        keys = list(output)
        rng.shuffle(keys)
        outputs.append({k: output[k] for k in keys})
    doc = {"gene_order": genes, "outputs": outputs}
    if rng.random() < 0.5:
        doc["model_version"] = rng.choice([2, "2.1", None])
    if rng.random() < 0.5:
        doc["other" + random_text(rng)] = random_metadata(rng)
    keys = list(doc)
    rng.shuffle(keys)
    return {k: doc[k] for k in keys}


def expected_samples_of(doc):
    """What a sample should hold, computed from json.load's view of the document."""
    genes = doc["gene_order"]
    expected = []
    for output in doc["outputs"]:
        counts = output.get("counts")
        if counts is None:
            counts = output["decoder_sample"]["counts"]
        if isinstance(counts, dict) and "counts" in counts:
            counts = counts["counts"]
        elif isinstance(counts, dict):
            counts = [counts.get(g, 0) for g in genes]
        extra = {k: v for k, v in output.items() if k not in ("counts", "metadata", "latents", "decoder_sample")}
        if "decoder_sample" in output:
            rest = {k: v for k, v in output["decoder_sample"].items() if k != "counts"}
            if rest:
                extra["decoder_sample"] = rest
        vector = np.array(counts, dtype=np.float64 if any(isinstance(c, float) for c in counts) else np.int64)
        expected.append((vector.astype(np.int64).tolist(), output.get("metadata", {}), output.get("latents"), extra))
    return expected


@pytest.mark.parametrize("seed", range(300))
def test_random_documents_match_json_load(tmp_path, seed):
    rng = random.Random(seed)
    doc = random_document(rng)
    text = rng.choice(WHITESPACE) + dump(doc, rng) + rng.choice(WHITESPACE)
    reloaded = json.loads(text)
    assert reloaded == doc
    path = write(tmp_path, text)
    chunk_size = rng.choice([1, 2, 7, 64, DEFAULT_CHUNK_SIZE])
    keys = list(reloaded)
    before = keys[: keys.index("outputs")] if "gene_order" in keys[: keys.index("outputs")] else keys
    others = {k: v for k, v in reloaded.items() if k not in ("gene_order", "model_version", "outputs")}
    with open_result(path, chunk_size=chunk_size) as reader:
        assert reader.gene_order == reloaded["gene_order"]
        # Keys after the outputs are known before iterating only when gene_order came after them too.
        assert reader.top_level == {k: v for k, v in others.items() if k in before}
        if "model_version" in before:
            assert reader.model_version == reloaded["model_version"]
        samples = list(reader.samples(expected_samples=len(reloaded["outputs"])))
        assert reader.top_level == others
        assert reader.model_version == reloaded.get("model_version")
    got = [(s.counts.tolist(), s.metadata, s.latents, s.extra) for s in samples]
    assert got == expected_samples_of(reloaded)
