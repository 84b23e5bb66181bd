"""The VES JSON schemas ves-streams ships, installed as the package ``ves_streams.schemas``.

This directory holds data only (``ves-5.json``, ``ves-7.json``); the file
exists so that setuptools maps it into the package (pyproject.toml) and
``importlib.resources`` can read it.
"""
