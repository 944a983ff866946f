"""PgBouncer's ``auth_query``: any PostgreSQL role logs in through PgBouncer without being listed in its auth_file.

As seed 002 (and PgBouncer's own documentation) does it: a role ``pgbouncer`` (LOGIN, with a password) that
PgBouncer logs in as (``auth_user``) to run ``auth_query``; a SECURITY DEFINER function ``pgbouncer.get_auth``
that returns a role's name and secret from ``pg_shadow``, callable by ``pgbouncer`` only; and in pgbouncer.ini:

    auth_user = pgbouncer
    auth_query = SELECT username, password FROM pgbouncer.get_auth($1)

The auth_file then holds only the auth user's password (PgBouncer needs it in clear to log in as that user) and
the admin console's user.

Rules
1. Created through the leader's PostgreSQL as the superuser, idempotently (``IF NOT EXISTS``, ``CREATE OR
   REPLACE``, grants), in ``postgres`` and in ``template1``: PgBouncer 1.18 runs auth_query in the database the
   client asks for, and databases created later from template1 inherit it. Replicas get it by replication.
2. The role's password never reaches the server in clear: the server receives its SCRAM verifier, computed by
   libpq (``PQencryptPasswordConn``), in a session with log_statement off. Errors name the database and the step,
   never the password.
3. The function pins its search_path (pg_catalog, pg_temp): a SECURITY DEFINER function must not resolve names
   through its caller's path. That is the one difference from the seed's text.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

AUTH_USER = "pgbouncer"
SCHEMA = "pgbouncer"
AUTH_QUERY = f"SELECT username, password FROM {SCHEMA}.get_auth($1)"
DATABASES = ("postgres", "template1")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class AuthSetupError(Exception):
    pass


def check_name(name: str, field: str) -> str:
    """A role or schema name used unquoted in pgbouncer.ini and in auth_query: a plain lower-case identifier."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AuthSetupError(f"{field}: expected a lower-case identifier (letters, digits, _), got {name!r}")
    return name


def function_sql(auth_user: str = AUTH_USER, schema: str = SCHEMA) -> list[str]:
    """The schema and the function, as one would type them by hand (docs/pgbouncer.md), idempotent."""
    check_name(auth_user, "auth_user")
    check_name(schema, "schema")
    return [
        f"CREATE SCHEMA IF NOT EXISTS {schema}",
        f"GRANT USAGE ON SCHEMA {schema} TO {auth_user}",
        f"CREATE OR REPLACE FUNCTION {schema}.get_auth(p_usename TEXT) "
        "RETURNS TABLE(username TEXT, password TEXT) AS $$ "
        "SELECT usename::TEXT, passwd::TEXT FROM pg_catalog.pg_shadow WHERE usename = p_usename; "
        "$$ LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp",
        f"REVOKE ALL ON FUNCTION {schema}.get_auth(TEXT) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION {schema}.get_auth(TEXT) TO {auth_user}",
    ]


def role_sql(verifier: str, auth_user: str = AUTH_USER) -> list[sql.Composable]:
    """The LOGIN role with its password given as a SCRAM verifier (rule 2); created when missing."""
    check_name(auth_user, "auth_user")
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise AuthSetupError("the auth user's password must be sent as a SCRAM-SHA-256 verifier")
    return [
        sql.SQL("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {}) THEN "
                "CREATE ROLE {} LOGIN; END IF; END $$").format(sql.Literal(auth_user), sql.Identifier(auth_user)),
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(auth_user), sql.Literal(verifier)),
    ]


def ensure(conninfo: dict[str, Any], password: str, auth_user: str = AUTH_USER,
           databases: tuple[str, ...] = DATABASES, timeout: int = 5) -> None:
    """Rule 1 on the PostgreSQL ``conninfo`` names (the leader, as the superuser): the role in the first database
    (roles are cluster-wide), the schema and function in each. AuthSetupError names the database and the step."""
    check_name(auth_user, "auth_user")
    for n, dbname in enumerate(databases):
        step = "connect"
        try:
            with psycopg.connect(**{**conninfo, "dbname": dbname}, connect_timeout=timeout,
                                 autocommit=True) as conn:
                conn.execute("SET log_statement TO 'none'")
                conn.execute("SET log_min_duration_statement TO -1")
                statements: list[Any] = []
                if n == 0:
                    verifier = conn.pgconn.encrypt_password(password.encode(), auth_user.encode(),
                                                            b"scram-sha-256").decode()
                    statements += role_sql(verifier, auth_user)
                statements += function_sql(auth_user)
                with conn.transaction():
                    for stmt in statements:
                        step = _describe(stmt, conn)
                        conn.execute(stmt)
        except psycopg.Error as e:
            detail = e.diag.message_primary or (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AuthSetupError(f"auth_query setup in database {dbname} ({step}): {detail}") from None


def _describe(stmt: Any, conn: psycopg.Connection) -> str:
    """The first words of a statement, for an error: never the password's verifier."""
    text = stmt if isinstance(stmt, str) else stmt.as_string(conn)
    return " ".join(text.split()[:4]) if "PASSWORD" not in text else f"ALTER ROLE {AUTH_USER} PASSWORD"
