"""The deterministic simulator behind ``pgha sim``: real agents, a fake world, seeded faults, checked invariants.

Each simulated node runs the real ``pgha.agent.loop.Agent`` (so the real executor and the real ``decide()``) over
fakes: one in-memory DCS (``pgha.dcs.memory``, etcd's lease and compare-and-swap semantics) on a fake clock, a fake
PostgreSQL with WAL, timelines and divergence (fakepg.py, wal.py), simulated background jobs (jobs.py) and a
watchdog (watchdog.py). The world (world.py) moves time by events; faults (faults.py) injure it; invariants
(invariants.py) are checked as it changes; runner.py runs thousands of seeded schedules, script.py runs the
hand-written scenarios of tests/sim/scenarios/. Schedules run with asynchronous replication or with
``synchronous_mode`` on or quorum (the fake PostgreSQL acknowledges a client write only once its synchronous
standbys have it, and no acknowledged write may then be lost).

Modules: wal, fakepg, simdcs, jobs, watchdog, node, world, invariants, faults, transcript, runner, script.
"""
