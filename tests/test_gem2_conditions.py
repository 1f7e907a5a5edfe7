"""GEM-2 rows of the conditions table: the `model` column, GEM-2 metadata and perturbation
columns, the body they send (GEM-2's shape), and problems told at file, line and column."""

from __future__ import annotations

import pytest

from synthbio_pipeline.pipeline.conditions import ConditionsError, read_conditions
from synthbio_pipeline.vocabulary.gem2 import gem2_problems, request_view

HEADER = "condition\tnum_samples\tmodel\ttissue\tsmiles\tentity_ontology_id\tgene_perturbations\tseed\tsex\n"


def table(tmp_path, rows: str, header: str = HEADER):
    path = tmp_path / "conditions.tsv"
    path.write_text(header + rows, encoding="utf-8")
    return path


def problems(path, defaults=None):
    with pytest.raises(ConditionsError) as caught:
        read_conditions(path, defaults)
    return {(p.line, p.column): p.message for p in caught.value.problems}, str(caught.value)


def test_gem2_rows_send_gem2_bodies_and_gem1_rows_keep_theirs(tmp_path):
    path = table(
        tmp_path,
        "liver_etoh\t2\tgem-2-bulk\tliver\tCCO; CC(=O)O\t\tENSG00000141510\t3\t\n"
        "lung_chembl\t3\tgem-2-sc\tlung\t\tCHEMBL3261331\t\t4\t\n"
        "plain\t2\t\t\t\t\t\t5\tmale\n",
    )
    liver, lung, plain = read_conditions(path, {"total_count": 1000})
    assert (liver.model_id, liver.modality, liver.group, liver.family) == ("gem-2-bulk", "bulk", "gem-2-bulk", "gem-2")
    assert liver.wire_body() == {
        "operation": "predict-expression",
        "inputs": {
            "modality": "bulk",
            "items": [
                {
                    "metadata": {
                        "tissue": "liver",
                        "bioactive_entity_perturbations": [{"smiles": "CCO"}, {"smiles": "CC(=O)O"}],
                        "gene_perturbations": [{"gene_id": "ENSG00000141510"}],
                    },
                    "num_samples": 2,
                    "output_total": {"type": "custom", "value": 1000},
                }
            ],
        },
        "options": {"seed": 3, "sampling_strategy": "sample generation"},
        "source": "synthbio-pipeline",
    }
    assert gem2_problems(liver.model_id, liver.wire_body()) == []
    assert (lung.modality, lung.group, lung.mode) == ("single-cell", "gem-2-single-cell", "mean estimation")
    assert lung.wire_body()["inputs"]["items"][0]["metadata"]["bioactive_entity_perturbations"] == [
        {"entity_ontology_id": "CHEMBL3261331"}
    ]
    assert (plain.model_id, plain.group, plain.family) == ("gem-1-bulk", "bulk", "gem-1")
    assert "inputs" in plain.wire_body() and isinstance(plain.wire_body()["inputs"], list)
    items, options = request_view(liver.wire_body())
    assert (items[0]["num_samples"], options["seed"], options["total_count"]) == (2, 3, 1000)
    assert options["sampling_strategy"] == "sample generation"


def test_canonical_gem2_takes_modality_and_operation_columns(tmp_path):
    header = "condition\tnum_samples\tmodel\toperation\tmodality\ttissue\tentity\n"
    path = table(tmp_path, "a\t1\tgem-2\tpredict-expression\tsingle-cell\tblood\tethanol\n", header)
    (row,) = read_conditions(path)
    body = row.wire_body()
    assert (body["operation"], body["inputs"]["modality"], row.group) == (
        "predict-expression",
        "single-cell",
        "gem-2-single-cell",
    )
    assert body["inputs"]["items"][0]["metadata"]["bioactive_entity_perturbations"] == [{"entity": "ethanol"}]
    assert gem2_problems("gem-2", body) == []


def test_bad_gem2_cells_are_told_at_their_line_and_column(tmp_path):
    path = table(
        tmp_path,
        "ok\t1\tgem-2-bulk\tliver\tCCO\t\t\t1\t\n"
        "bad_smiles\t1\tgem-2-bulk\tliver\tC C\t\t\t1\t\n"
        "gem1_key\t1\tgem-2-bulk\tliver\t\t\t\t1\tmale\n"
        "bad_gene\t1\tgem-2-bulk\tliver\t\t\tENSG00000141510;TP53\t1\t\n"
        "gem2_on_gem1\t1\tgem-1-bulk\tliver\t\t\t\t1\t\n"
        "typo\t1\tgem-2-blk\tliver\t\t\t\t1\t\n"
        "counts_op\t1\tgem-2-bulk_predict-metadata\t\t\t\t\t1\t\n"
        "bad_seed\t1\tgem-2-bulk\tliver\t\t\t\tx\t\n",
    )
    found, text = problems(path)
    assert set(found) == {
        (3, "smiles"),
        (4, "sex"),
        (5, "gene_perturbations"),
        (6, "tissue"),
        (7, "model"),
        (8, "model"),
        (9, "seed"),
    }
    assert "'C C' is malformed" in found[(3, "smiles")]
    assert "GEM-1 metadata key" in found[(4, "sex")]
    assert "gene 2" in found[(5, "gene_perturbations")] and "Ensembl" in found[(5, "gene_perturbations")]
    assert "GEM-2 column" in found[(6, "tissue")]
    assert "did you mean 'gem-2-bulk'" in found[(7, "model")]
    assert "answers metadata" in found[(8, "model")] and "annotate" in found[(8, "model")]
    assert f"{path}:3 (condition 'bad_smiles'), column 'smiles'" in text


def test_modality_that_contradicts_the_id_and_gem1_options_are_refused(tmp_path):
    header = "condition\tnum_samples\tmodel\tmodality\ttissue\tdeterministic_latents\tmode\n"
    path = table(
        tmp_path,
        "a\t1\tgem-2-sc\tbulk\tlung\t\t\n"
        "b\t1\tgem-2-bulk\t\tlung\ttrue\t\n"
        "c\t1\tgem-2-sc\t\tlung\t\tsample generation\n",
        header,
    )
    found, _ = problems(path)
    assert set(found) == {(2, "modality"), (3, "deterministic_latents"), (4, "mode")}
    # A config default of a GEM-1 option is for GEM-1 rows: GEM-2 rows do not take it.
    ok = table(tmp_path, "a\t1\tgem-2-bulk\t\tlung\t\t\n", header)
    (row,) = read_conditions(ok, {"deterministic_latents": True})
    assert "deterministic_latents" not in row.options


def test_model_and_model_id_are_synonyms_not_both(tmp_path):
    path = table(tmp_path, "a\t1\tgem-2-bulk\tgem-2-bulk\n", "condition\tnum_samples\tmodel\tmodel_id\n")
    found, _ = problems(path)
    assert (1, "model_id") in found
    path = table(tmp_path, "a\t1\tgem-2-bulk\tliver\n", "condition\tnum_samples\tmodel_id\ttissue\n")
    assert read_conditions(path)[0].group == "gem-2-bulk"


REFERENCE_HEADER = (
    "condition\tnum_samples\tmodel\toperation\treference\treference_sample\tsmiles\ttissue\ttotal_count\n"
)


def test_gem2_reference_and_autoencode_rows_send_the_reference_counts(tmp_path):
    path = table(
        tmp_path,
        "etoh\t2\tgem-2-bulk_reference-conditioning\t\tref.tsv\tctrl\tCCO\t\t\n"
        "member\t1\tgem-2-sc_reference-conditioning-p3rz5xv7\t\tref.tsv\t\t\t\t5000\n"
        "named\t1\tgem-2\tpredict-expression-from-reference\tref.tsv\tctrl\t\t\t\n"
        "auto\t1\tgem-2-bulk_autoencode\t\tref.tsv\tctrl\t\t\t\n",
        REFERENCE_HEADER,
    )
    etoh, member, named, auto = read_conditions(path, {"seed": 3})
    assert all(c.is_reference and c.is_gem2 for c in (etoh, member, named, auto))
    assert [c.group for c in (etoh, member, named, auto)] == [
        "gem-2-bulk",
        "gem-2-single-cell",
        "gem-2-bulk",
        "gem-2-bulk",
    ]
    assert (etoh.reference, etoh.reference_sample, member.reference_sample) == ("ref.tsv", "ctrl", None)
    counts = [5, 0, 7]
    body = etoh.wire_body(counts)
    assert body["operation"] == "predict-expression-from-reference"
    assert body["inputs"]["items"] == [
        {"counts": counts, "metadata": {"bioactive_entity_perturbations": [{"smiles": "CCO"}]}, "num_samples": 2}
    ]
    assert gem2_problems("gem-2-bulk_reference-conditioning", body, n_genes=3) == []
    item = member.wire_body(counts)["inputs"]["items"][0]
    assert item == {"counts": counts, "num_samples": 1, "output_total": {"type": "custom", "value": 5000}}
    assert named.wire_body(counts)["operation"] == "predict-expression-from-reference"
    # autoencode: the sample's counts only (one output), no sampling strategy.
    assert auto.num_samples == 1 and auto.mode is None
    body = auto.wire_body(counts)
    assert body["operation"] == "autoencode" and body["inputs"]["items"] == [{"counts": counts}]
    assert body["options"] == {"seed": 3}
    assert gem2_problems("gem-2-bulk_autoencode", body, n_genes=3) == []


def test_bad_gem2_reference_rows_are_told_at_their_column(tmp_path):
    path = table(
        tmp_path,
        "no_file\t2\tgem-2-bulk_reference-conditioning\t\t\t\tCCO\t\t\n"
        "file_on_baseline\t2\tgem-2-bulk\t\tref.tsv\tctrl\t\tliver\t\n"
        "auto_samples\t3\tgem-2-bulk_autoencode\t\tref.tsv\tctrl\t\t\t\n"
        "auto_metadata\t1\tgem-2-bulk_autoencode\t\tref.tsv\tctrl\tCCO\t\t\n"
        "metadata_op\t1\tgem-2\tpredict-metadata\tref.tsv\t\t\t\t\n"
        "sample_alone\t1\tgem-2-bulk_reference-conditioning\t\t\tctrl\t\t\t\n",
        REFERENCE_HEADER,
    )
    found, _ = problems(path)
    assert set(found) == {
        (2, "reference"),
        (3, "reference"),
        (4, "num_samples"),
        (5, "smiles"),
        (6, "operation"),
        (7, "reference_sample"),
        (7, "reference"),
    }
    assert "reads a sample's counts" in found[(2, "reference")]
    assert "generates from metadata" in found[(3, "reference")]
    assert "one output per reference sample" in found[(4, "num_samples")]
    assert "takes no metadata" in found[(5, "smiles")]
    assert "annotate" in found[(6, "operation")]


def test_overlong_numbers_in_gem2_rows_are_told_at_their_column_cut_short(tmp_path):
    header = "condition\tnum_samples\tmodel\ttissue\tseed\n"
    path = table(tmp_path, f"a\t{'7' * 300}\tgem-2-bulk\tlung\t{'9' * 5000}\n", header)
    with pytest.raises(ConditionsError) as caught:
        read_conditions(path, {"total_count": "1" * 400})
    told = [(p.line, str(p)) for p in caught.value.problems]
    assert (
        2,
        f"{path}:2 (condition 'a'), column 'seed': {'9' * 20}... has 5,000 digits; a whole number here has at most 18",
    ) in told
    assert any(
        "column 'total_count'" in text
        and "has 400 digits" in text
        and "the value is config defaults.total_count" in text
        for _, text in told
    )
    assert any("column 'num_samples'" in text and "has 300 digits" in text for _, text in told)
    # No overlong value is echoed whole, and num_samples is told once (a stand-in checks the rest).
    assert all("9" * 21 not in text and "7" * 21 not in text for _, text in told)
    assert sum("column 'num_samples'" in text for _, text in told) == 1
