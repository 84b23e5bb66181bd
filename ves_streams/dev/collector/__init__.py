"""A local VES collector for development, tests and drills.

It speaks the VES event listener API (v5 and v7: single events, batches,
topic paths), validates every event against the project's schemas
(:mod:`ves_streams.dev.collector.schema`), answers as ONAP's collector does (202, or
400/401 with a VES ``requestError`` body), and records accepted events to a
JSON-lines file. With ``--control`` it also takes fault-injection commands
(503/429 windows, delays, rejected event ids) on ``POST /_control``.

Modules: ``config`` (settings, secrets, TLS), ``listener`` (the VES rules,
no HTTP), ``faults`` (fault injection and counters), ``recorder`` (the
JSON-lines files and the console summary), ``server`` (aiohttp) and
``commands`` (``ves-streams collector``). Importing this package imports
nothing heavy, so ``ves-streams --help`` stays fast.
"""
