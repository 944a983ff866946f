"""pgha: PostgreSQL high availability, compatible with Patroni where it is seen from outside."""

__version__ = "0.1.0"
# The version pgha announces in member keys and /patroni: the Patroni release whose interfaces it keeps, so
# Patroni's patronictl and tools reading member data treat it as a current member.
PATRONI_COMPAT_VERSION = "4.1.5"
