"""vidanim.supabase_keys: which kind of key a value is, where each kind may go, and its headers."""

from __future__ import annotations

import jwt
import pytest

from vidanim.supabase_keys import KeyKind, WrongKey, kind_of, request_headers, require_client_key, require_service_key

SECRET = "a-project-jwt-secret-of-at-least-32-characters"


def legacy(role: str) -> str:
    return jwt.encode({"role": role, "iss": "supabase"}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("sb_publishable_abc", KeyKind.PUBLISHABLE),
        ("sb_secret_abc", KeyKind.SECRET),
        (legacy("anon"), KeyKind.LEGACY_ANON),
        (legacy("service_role"), KeyKind.LEGACY_SERVICE_ROLE),
        (legacy("authenticated"), KeyKind.LEGACY_OTHER),
        (legacy("supabase_admin"), KeyKind.LEGACY_OTHER),
        ("not-a-key", KeyKind.UNKNOWN),
    ],
)
def test_each_value_is_known_for_the_kind_of_key_it_is(key, kind):
    assert kind_of(key) is kind


@pytest.mark.parametrize("role", ["authenticated", "anon", "supabase_admin"])
def test_a_jwt_of_any_role_but_service_role_is_refused_as_the_service_key(role):
    with pytest.raises(WrongKey, match="VIDANIM_SUPABASE_SERVICE_ROLE_KEY"):
        require_service_key(legacy(role), "VIDANIM_SUPABASE_SERVICE_ROLE_KEY")


@pytest.mark.parametrize("key", ["sb_secret_abc", legacy("service_role")])
def test_both_generations_of_the_service_key_are_taken_as_the_service_key(key):
    require_service_key(key, "VIDANIM_SUPABASE_SERVICE_ROLE_KEY")


@pytest.mark.parametrize("key", ["sb_secret_abc", legacy("service_role")])
def test_a_client_refuses_both_generations_of_the_service_key(key):
    with pytest.raises(WrongKey, match="bypasses row-level security"):
        require_client_key(key, "VIDANIM_SUPABASE_ANON_KEY")


@pytest.mark.parametrize("key", ["sb_publishable_abc", legacy("anon")])
def test_a_client_takes_both_generations_of_the_anon_key(key):
    require_client_key(key, "VIDANIM_SUPABASE_ANON_KEY")


def test_a_secret_key_goes_in_apikey_only_and_a_legacy_key_in_both_headers():
    assert request_headers("sb_secret_abc") == {"apikey": "sb_secret_abc"}
    key = legacy("service_role")
    assert request_headers(key) == {"apikey": key, "Authorization": f"Bearer {key}"}
