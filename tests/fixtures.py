"""Test keyring backends: in memory, and in a file shared with CLI subprocesses."""

from __future__ import annotations

import os

import keyring
import keyring.backend
from jaraco.classes import properties


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives in memory, so tests never touch a real one."""

    @properties.classproperty
    def priority(cls):
        # keyring considers every backend class it can see; this one is only ever chosen explicitly
        raise RuntimeError("test keyring: selected explicitly only")

    def __init__(self):
        super().__init__()
        self.entries = {}

    def get_password(self, service, username):
        return self.entries.get((service, username))

    def set_password(self, service, username, password):
        self.entries[(service, username)] = password

    def delete_password(self, service, username):
        if self.entries.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("not found")


class FileKeyring(MemoryKeyring):
    """A keyring kept in the JSON file named by $SYNTHBIO_TEST_KEYRING: lets CLI subprocesses share one."""

    @properties.classproperty
    def priority(cls):
        if "SYNTHBIO_TEST_KEYRING" not in os.environ:
            raise RuntimeError("test keyring: needs $SYNTHBIO_TEST_KEYRING")
        return 1

    def __init__(self):
        super().__init__()
        import json

        self.path = os.environ["SYNTHBIO_TEST_KEYRING"]
        if os.path.exists(self.path):
            with open(self.path) as handle:
                self.entries = {tuple(k.split("\x00")): v for k, v in json.load(handle).items()}

    def _save(self):
        import json

        with open(self.path, "w") as handle:
            json.dump({"\x00".join(k): v for k, v in self.entries.items()}, handle)

    def set_password(self, service, username, password):
        super().set_password(service, username, password)
        self._save()

    def delete_password(self, service, username):
        super().delete_password(service, username)
        self._save()
