"""PgBouncer's auth_query set-up (src/pgha/pgbouncer/authquery.py) and the files pgha writes for it
(process.py): plain values in, text out. The real thing runs in tests/integration/test_pgbouncer.py."""

from __future__ import annotations

import pytest
from psycopg import sql

from pgha.pgbouncer.authquery import AUTH_QUERY, AuthSetupError, check_name, function_sql, role_sql
from pgha.pgbouncer.ini import targets
from pgha.pgbouncer.process import parse_auth_file, render_auth_file, render_ini


def ini_settings(text: str) -> dict[str, str]:
    section, out = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "pgbouncer" and "=" in line and not line.startswith(";"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_ini_names_the_auth_user_and_the_query():
    text = render_ini("127.0.0.1", 5440, 5743, "/tmp/c/pgbouncer-users.txt")
    settings = ini_settings(text)
    assert settings["auth_user"] == "pgbouncer"
    assert settings["auth_query"] == "SELECT username, password FROM pgbouncer.get_auth($1)" == AUTH_QUERY
    assert settings["auth_type"] == "scram-sha-256" and settings["auth_file"] == "/tmp/c/pgbouncer-users.txt"
    assert settings["admin_users"] == "postgres"
    assert targets(text) == {"postgres": ("127.0.0.1", 5440), "*": ("127.0.0.1", 5440)}
    without = ini_settings(render_ini("127.0.0.1", 5440, 5743, "/f", auth_user=None))
    assert "auth_user" not in without and "auth_query" not in without


def test_the_auth_file_reads_back_what_was_written():
    users = [("postgres", 'p"w d'), ("pgbouncer", "s3cret"), ('we"ird', "")]
    text = render_auth_file(users)
    assert text.splitlines()[0] == '"postgres" "p""w d"'
    assert parse_auth_file(text) == dict(users)
    assert parse_auth_file("; a comment\n\n" + text + "garbage line\n") == dict(users)


def test_the_function_is_the_usual_one_callable_by_the_auth_user_only():
    stmts = function_sql()
    text = "\n".join(stmts)
    assert stmts[0] == "CREATE SCHEMA IF NOT EXISTS pgbouncer"
    assert "CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename TEXT) RETURNS TABLE(username TEXT, " \
           "password TEXT)" in text
    assert "SELECT usename::TEXT, passwd::TEXT FROM pg_catalog.pg_shadow WHERE usename = p_usename;" in text
    assert "LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp" in text
    assert "REVOKE ALL ON FUNCTION pgbouncer.get_auth(TEXT) FROM PUBLIC" in stmts
    assert "GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(TEXT) TO pgbouncer" in stmts
    assert "GRANT USAGE ON SCHEMA pgbouncer TO pgbouncer" in stmts
    assert stmts.index("REVOKE ALL ON FUNCTION pgbouncer.get_auth(TEXT) FROM PUBLIC") > 1  # after the CREATE


def test_the_role_gets_a_verifier_never_a_clear_password():
    verifier = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
    stmts = role_sql(verifier)
    assert all(isinstance(s, sql.Composable) for s in stmts)
    with pytest.raises(AuthSetupError, match="SCRAM-SHA-256 verifier"):
        role_sql("clear-text-password")


@pytest.mark.parametrize("bad", ["PgBouncer", "a b", "x;drop", "", "1abc", "a" * 64])
def test_a_bad_auth_user_name_is_refused_naming_the_field(bad):
    with pytest.raises(AuthSetupError, match="^auth_user: expected a lower-case identifier"):
        check_name(bad, "auth_user")
    with pytest.raises(AuthSetupError, match="^auth_user:"):
        render_ini("127.0.0.1", 5440, 5743, "/f", auth_user=bad)
