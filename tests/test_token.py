"""The token store and the `synthbio-pipeline token` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthbio_pipeline import clear_token, has_token, load_token_from_keyring, set_token
from synthbio_pipeline.client.token_store import resolve_token
from synthbio_pipeline.errors import MissingTokenError

SECRET = "tok-TOKEN-test-91c2"


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    monkeypatch.delenv("SYNTHESIZE_API_KEY", raising=False)


def test_set_token_sets_the_session_and_optionally_the_vendor_keyring_entry(memory_keyring):
    set_token(SECRET)
    assert has_token() and os.environ["SYNTHESIZE_API_KEY"] == SECRET
    assert memory_keyring.entries == {}
    set_token(SECRET, use_keyring=True)
    assert memory_keyring.entries == {("pysynthbio", "api_token"): SECRET}


def test_set_token_refuses_an_empty_token(memory_keyring):
    with pytest.raises(MissingTokenError):
        set_token("   ")
    assert not has_token()


def test_load_from_keyring_and_clear(memory_keyring):
    assert load_token_from_keyring() is False
    memory_keyring.set_password("pysynthbio", "api_token", SECRET)
    assert load_token_from_keyring() is True and has_token()
    clear_token()
    assert not has_token() and memory_keyring.entries
    clear_token(remove_from_keyring=True)
    assert memory_keyring.entries == {}
    clear_token(remove_from_keyring=True)  # nothing left to remove is not an error


def test_resolve_prefers_the_environment(memory_keyring, monkeypatch):
    memory_keyring.set_password("pysynthbio", "api_token", "from-keyring")
    assert resolve_token() == "from-keyring"
    monkeypatch.setenv("SYNTHESIZE_API_KEY", "from-env")
    assert resolve_token() == "from-env"


def test_resolve_without_any_token_says_how_to_set_one(memory_keyring):
    with pytest.raises(MissingTokenError) as caught:
        resolve_token()
    assert "SYNTHESIZE_API_KEY" in str(caught.value) and "token set" in str(caught.value)


def cli(args, tmp_path, stdin="", backend="fixtures.FileKeyring"):
    env = {k: v for k, v in os.environ.items() if k != "SYNTHESIZE_API_KEY"}
    env["PYTHON_KEYRING_BACKEND"] = backend
    env["SYNTHBIO_TEST_KEYRING"] = str(tmp_path / "keyring.json")
    env["PYTHONPATH"] = str(Path(__file__).parent)
    return subprocess.run(
        [sys.executable, "-m", "synthbio_pipeline.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_token_set_has_clear_round_trip(tmp_path):
    assert cli(["token", "has"], tmp_path).returncode == 1
    done = cli(["token", "set"], tmp_path, stdin=SECRET + "\n")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    stored = json.loads((tmp_path / "keyring.json").read_text())
    assert list(stored.values()) == [SECRET]
    has = cli(["token", "has"], tmp_path)
    assert has.returncode == 0 and "keyring" in has.stdout and SECRET not in has.stdout
    assert cli(["token", "clear", "--keyring"], tmp_path).returncode == 0
    assert json.loads((tmp_path / "keyring.json").read_text()) == {}
    assert cli(["token", "has"], tmp_path).returncode == 1


@pytest.mark.parametrize("backend", ["keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"])
def test_cli_token_set_without_a_usable_keyring_says_so_in_one_line(tmp_path, backend):
    """Headless machines (HPC login nodes) have no keyring: one line offering the environment, no traceback."""
    done = cli(["token", "set"], tmp_path, stdin=SECRET + "\n", backend=backend)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: no usable system keyring on this machine (keyring backend " + backend)
    assert "export SYNTHESIZE_API_KEY=" in done.stderr and "chmod 600" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    # `token has` on such a machine is no traceback either.
    has = cli(["token", "has"], tmp_path, backend=backend)
    assert has.returncode == 1 and "Traceback" not in has.stderr and "SYNTHESIZE_API_KEY" in has.stdout


def test_a_keyring_that_refuses_is_one_clear_error_or_one_warning(monkeypatch):
    import keyring
    from keyring.backends import fail

    from synthbio_pipeline.client.token_store import store_in_keyring
    from synthbio_pipeline.errors import KeyringUnavailableError

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(KeyringUnavailableError, match="no usable system keyring.*export SYNTHESIZE_API_KEY"):
            store_in_keyring(SECRET)
        # The vendor's semantics: set_token keeps the token for the session and warns.
        with pytest.warns(UserWarning, match=r"not stored in the system keyring \(no usable system keyring"):
            assert set_token(SECRET, use_keyring=True) is True
        assert os.environ["SYNTHESIZE_API_KEY"] == SECRET
    finally:
        keyring.set_keyring(previous)


def test_cli_never_takes_the_token_as_an_argument(tmp_path):
    done = cli(["token", "set", SECRET], tmp_path)
    assert done.returncode == 2 and not (tmp_path / "keyring.json").exists()


def test_cli_example_query_is_valid(tmp_path):
    from synthbio_pipeline import validate_query

    done = cli(["example-query", "--modality", "single-cell"], tmp_path)
    assert done.returncode == 0
    validate_query(json.loads(done.stdout))


def test_check_token_leaves_a_keyring_token_out_of_the_environment(memory_keyring, monkeypatch):
    """Jobs read the keyring themselves; an exported token would travel with every cluster job."""
    from synthbio_pipeline.pipeline.preflight import check_token

    monkeypatch.delenv("SYNTHESIZE_API_KEY", raising=False)
    memory_keyring.set_password("pysynthbio", "api_token", SECRET)
    check_token("https://app.synthesize.bio")
    assert "SYNTHESIZE_API_KEY" not in os.environ
    memory_keyring.delete_password("pysynthbio", "api_token")
    with pytest.raises(MissingTokenError):
        check_token("https://app.synthesize.bio")
