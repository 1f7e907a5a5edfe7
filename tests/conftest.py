"""Fixtures every test module may use: in-process API emulators.

``memory_keyring`` replaces the system keyring for one test. ``server`` is a
:class:`~scripted_server.ScriptedServer` on loopback, with ``SCRIPTED_TOKEN`` in
``SYNTHESIZE_API_KEY``.
``emulator`` is a small, fast emulator (200 genes, 0.1 s latency) that accepts only
``EMULATOR_TOKEN``; the test's environment carries that token in ``SYNTHESIZE_API_KEY``
and no ``SYNTHESIZE_API_BASE_URL``. ``make_emulator(**options)`` starts others (options
of :func:`~synthbio_pipeline.emulator.start_emulator`, same defaults as ``emulator``).
Every emulator is stopped when its test ends.
"""

from __future__ import annotations

import keyring
import pytest
from fixtures import MemoryKeyring
from scripted_server import SCRIPTED_TOKEN, ScriptedServer, start

EMULATOR_TOKEN = "emulator-test-token"


@pytest.fixture
def emulator_token(monkeypatch) -> str:
    """The token the test emulators accept, also put in ``SYNTHESIZE_API_KEY``."""
    monkeypatch.setenv("SYNTHESIZE_API_KEY", EMULATOR_TOKEN)
    monkeypatch.delenv("SYNTHESIZE_API_BASE_URL", raising=False)
    return EMULATOR_TOKEN


@pytest.fixture
def make_emulator(emulator_token):
    """A factory of emulators, all stopped at the end of the test."""
    started = []

    def make(**options):
        # Imported here so that a broken package fails the tests that use it, not collection.
        from synthbio_pipeline.emulator import start_emulator

        options = {"tokens": [emulator_token], "latency": 0.1, "genes": 200, **options}
        started.append(start_emulator(**options))
        return started[-1]

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def emulator(make_emulator):
    """A running emulator: 200 genes, 0.1 s from submission to ready, ``EMULATOR_TOKEN`` only."""
    return make_emulator()


@pytest.fixture
def memory_keyring():
    """An in-memory keyring for the test (never the machine's real one)."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def server(monkeypatch):
    """A scripted loopback server (``server.url``); the token in the environment is SCRIPTED_TOKEN."""
    monkeypatch.setenv("SYNTHESIZE_API_KEY", SCRIPTED_TOKEN)
    state = ScriptedServer()
    httpd, url = start(state)
    state.url = url
    yield state
    httpd.shutdown()
