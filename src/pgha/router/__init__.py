"""Routing clients to the leader (rw) and to the replicas (ro) through HAProxy.

- haproxy_config.py: the HAProxy configuration, a pure function of the cluster's members.
- runtime.py: a client of HAProxy's runtime API (the admin stats socket).
- follow.py: the `pgha router` loop, which moves the routing at once when the leader key changes; HAProxy's own
  health checks (on the REST API's /primary and /replica) stay the safety net. Design: docs/routing.md.
"""
