"""``python -m proxy`` is the ``persona-proxy`` command."""

from proxy.cli import main

raise SystemExit(main())
