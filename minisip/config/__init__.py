"""Configuration: YAML files in, one immutable validated snapshot out.

schema.py (frozen dataclasses; field metadata is the validation table),
loader.py (``load_snapshot``, ``ConfigError`` with file/line/key), fastyaml.py (the fast
reader), store.py (round-trip edits for the CLI), watcher.py (live reload, ConfigHolder).
Nothing is imported here, so ``import minisip.config.store`` stays light for the CLI.
"""
