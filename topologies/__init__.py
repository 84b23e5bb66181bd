"""The topologies ves-streams ships, installed as the package ``ves_streams.topologies``.

This directory holds data only (``*.yaml`` and ``ves5/*.yaml``); the file
exists so that setuptools maps it into the package (pyproject.toml) and
``importlib.resources`` can read it. ``ves-streams topologies`` lists them.
"""
