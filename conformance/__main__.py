"""`python -m conformance <base-url> ...`: see README.md."""

from __future__ import annotations

from .runner import main

raise SystemExit(main())
