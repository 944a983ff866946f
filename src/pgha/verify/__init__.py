"""`pgha verify`: a bank workload with fault injection that checks what an HA cluster promises.

- workload.py: the bank (accounts, ledger) and its client threads;
- target.py: how faults reach a cluster (``Target``: leader, PIDs, restarts, REST API and credentials);
- faults.py: the fault menu;
- runner.py: one run (setup, workload with faults, final read);
- report.py: the pure accounting from client events and ledger rows to the figures per fault;
- render.py: the table, the JSON and the timeline PNG.

Rules: every loop is bounded in count and time; processes are found through the cluster's own files and ended
by PID; only 127.0.0.1 is touched by the local target.
"""
