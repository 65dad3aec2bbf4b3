"""Which Supabase grant modes a test runs under (tests/conftest.py's `db` runs each test under both).

A scenario in which only the service role acts (the worker at scale, its listeners, its
logs) runs under `modern` alone. For that role, modern is the strict mode: legacy only adds
privileges, so a legacy run would repeat the same test. What users and anon may do is
tested under both modes (tests/db, tests/client).
"""

from __future__ import annotations

import pytest

service_role_scenario = pytest.mark.parametrize("db", ["modern"], indirect=True)
