"""Governance (docs/design.md, "Client keys"): who may call (keys), what
they may use (personas), how much (rpm, tpm, max_parallel, budgets).

- ``config.py``: the config models (``keys:``, ``personas.X.limits``);
- ``keys.py``: the key ring (config, plain and run-time keys by hash) and its refresh;
- ``keystore.py``: the ``client_keys`` table and spend queries on the usage store;
- ``periods.py``: UTC budget periods;
- ``gate.py``: the two calls every front door makes, ``admit`` and ``release``;
- ``auth.py``: the client-key middleware; ``routes.py``: ``/admin/keys``; ``cli.py``: ``keys``.

This package's ``__init__`` imports nothing: ``proxy/config.py`` imports ``config.py`` early.
"""
