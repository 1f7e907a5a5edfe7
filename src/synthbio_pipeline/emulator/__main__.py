"""``python -m synthbio_pipeline.emulator``: an alias of ``synthbio-pipeline emulator``."""

from synthbio_pipeline.emulator.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
