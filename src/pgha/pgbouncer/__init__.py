"""PgBouncer beside a pgha cluster: `pgha pgbouncer` keeps its [databases] on the leader (docs/pgbouncer.md)."""
