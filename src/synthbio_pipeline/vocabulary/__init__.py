"""The service's vocabulary, defined once: models, modalities, modes, metadata keys, query options.

- :mod:`.models`: the modalities (``bulk``, ``single-cell``), the modes (sampling
  strategies) and the model table (``MODELS``: one row per model id, saying its family,
  kind, modes, inputs and which metadata vocabulary and key groups it takes);
- :mod:`.metadata`: the metadata vocabularies (``METADATA_KEYS`` is GEM-1's: each key's
  group and allowed values or format) and the value checks;
- :mod:`.options`: the query options (``QUERY_OPTIONS``: ``seed``, ``total_count``,
  ``deterministic_latents``) with their types and the server's defaults;
- :mod:`.query`: queries built on all three: rsynthbio's user-facing form, its translation
  to the wire, and the checks the client and the emulator share (:func:`.query.query_problems`,
  :func:`.query.wire_problems`);
- :mod:`.words`: how problems quote allowed words and suggest the closest one.

Nothing here performs I/O; every other subpackage may import it. The workflow's JSON
schemas and the tables of config/README.md are generated from it
(``python scripts/generate_vocabulary.py``; ``tests/test_vocabulary.py`` fails when they
are stale).
"""
