"""The test suite is one package, ``tests``: helpers are imported as ``tests.<sub>.<module>`` (pytest puts the
checkout on ``sys.path`` for it, under bare ``pytest`` and ``python -m pytest`` alike)."""
