"""`pgha up`: a real cluster on this machine (etcd, PostgreSQL nodes and their agents) in one command."""
