"""schemathesis hooks for the server fuzz (benchmarks/bench_server_fuzz.py loads them with
SCHEMATHESIS_HOOKS=benchmarks.schemathesis_hooks): a film spec sent as application/toml is text on the wire,
like text/plain, for which schemathesis has a serializer."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias("application/toml", "text/plain")
