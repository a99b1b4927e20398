"""MIDI: files (import/export and the Note model shared with the piano roll), devices, mapping.

May import :mod:`app.engine` only (see ARCHITECTURE.md).
"""
