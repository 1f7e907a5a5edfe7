"""The service's vocabulary, defined once: models, modalities, modes, metadata keys, query options.

Also the query checks built on it, which the client and the emulator share. Nothing here
performs I/O; every other subpackage may import it.
"""
