"""`python -m host` is the `jobhost` command."""

from host.cli import main

raise SystemExit(main())
