"""Where the SQL lives, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_CHECKOUT_ROOT = _PACKAGE_DIR.parent.parent


def migrations_dir() -> Path:
    """`supabase/migrations` of the checkout, else the copy shipped in the wheel."""
    checkout = _CHECKOUT_ROOT / "supabase" / "migrations"
    return checkout if checkout.is_dir() else _PACKAGE_DIR / "_sql" / "migrations"


def compat_dir() -> Path:
    """`sql/` of the checkout (the Supabase compatibility layer), else the wheel's copy."""
    checkout = _CHECKOUT_ROOT / "sql"
    return checkout if (checkout / "supabase_compat.sql").is_file() else _PACKAGE_DIR / "_sql" / "compat"
