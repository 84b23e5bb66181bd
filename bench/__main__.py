"""``python -m bench`` runs the pipeline benchmark (see :mod:`bench.run`)."""

from bench.run import main

raise SystemExit(main())
