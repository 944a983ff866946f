"""Reason codes: why the core decided what it did.

Every decision carries exactly one ``Reason``. Tests and the simulator compare codes, never sentences; the agent
logs the rendered message once per tick, and the status shows it. Codes are stable identifiers: rename the message
freely, never the code.
"""

from __future__ import annotations

from enum import Enum


class Reason(Enum):
    # (code, message template; {me}, {leader}, {detail} are filled in by render())
    LEADER_REFRESHED = ("leader_refreshed", "no action: I am ({me}), the leader with the lock")
    LEADER_PROMOTING = ("leader_promoting", "I hold the lock and run as a replica: promoting")
    LEADER_STARTING = ("leader_starting", "I hold the lock: starting PostgreSQL as primary")
    LEADER_KEY_REACQUIRE = ("leader_key_reacquire", "the leader key vanished while my lease is valid: taking it again")
    FOLLOWING = ("following", "no action: I am ({me}), a replica following ({leader})")
    FOLLOW_NEW_LEADER = ("follow_new_leader", "pointing replication at the new leader ({leader})")
    LOCK_LOST_DEMOTE = ("lock_lost_demote", "demoting: ({leader}) holds the lock and I run as primary")
    LEASE_EXPIRING_FENCE = ("lease_expiring_fence", "demoting: my lease would expire before I could renew it")
    DCS_UNREACHABLE_HOLD = ("dcs_unreachable_hold", "DCS unreachable ({detail}); my lease is still valid, keeping it")
    DCS_UNREACHABLE = ("dcs_unreachable", "DCS unreachable ({detail}); no action")
    RACE_WON = ("race_won", "no leader: I am the healthiest node, taking the lock and promoting; {detail}")
    RACE_WON_PRIMARY = ("race_won_primary", "no leader: I was the primary, taking the lock and starting as primary")
    RACE_LOWER_PRIORITY = ("race_lower_priority", "no leader: {detail} has as much WAL and a higher failover_priority")
    RACE_BEHIND = ("race_behind", "no leader: not the healthiest node ({detail}), waiting")
    RACE_NOT_ALLOWED = ("race_not_allowed", "no leader: I am not allowed to promote ({detail})")
    RACE_NOT_SYNC = ("race_not_sync", "no leader: I am not allowed to promote: {detail}")
    RACE_NO_QUORUM = ("race_no_quorum", "no leader: not promoting yet: {detail}")
    SYNC_CHANGE = ("sync_change", "I am ({me}), the leader: synchronous replication: {detail}")
    RACE_TOO_FAR_BEHIND = ("race_too_far_behind", "no leader: my WAL is behind the last known primary by {detail} bytes")
    BOOTSTRAP_CLAIMED = ("bootstrap_claimed", "won the initialize race: bootstrapping a new cluster")
    BOOTSTRAP_RUNNING = ("bootstrap_running", "bootstrap in progress")
    BOOTSTRAP_DONE = ("bootstrap_done", "bootstrap done: taking the lock, publishing the system id and config")
    BOOTSTRAP_FAILED = ("bootstrap_failed", "bootstrap failed ({detail}): giving the initialize race back")
    WAIT_BOOTSTRAP = ("wait_bootstrap", "another node is bootstrapping the cluster: waiting")
    WAIT_LEADER = ("wait_leader", "the cluster is initialized but has no leader to clone from: waiting")
    NOT_ALLOWED_TO_BOOTSTRAP = ("not_allowed_to_bootstrap", "no cluster yet and I am tagged nofailover: waiting")
    CLONE_STARTED = ("clone_started", "creating a replica from ({leader})")
    CLONE_RUNNING = ("clone_running", "creating replica in progress")
    CLONE_FAILED = ("clone_failed", "creating replica failed ({detail}): removing the partial data directory")
    JOB_RUNNING = ("job_running", "{detail} in progress")
    JOB_DONE = ("job_done", "{detail} finished")
    JOB_RETRY = ("job_retry", "will try again: {detail}")
    STARTING_REPLICA = ("starting_replica", "starting PostgreSQL as a replica of ({leader})")
    FOREIGN_DATA_DIR = ("foreign_data_dir", "{detail}")
    INVALID_DATA_DIR = ("invalid_data_dir", "{detail}")
    SHUTDOWN = ("shutdown", "shutting down: stopping PostgreSQL, then releasing the lock")
    SHUTDOWN_HANDOVER = ("shutdown_handover", "shutting down: clean stop, then handing the lock over once a replica "
                         "has the shutdown checkpoint")
    PRIMARY_STARTING = ("primary_starting", "I hold the lock and PostgreSQL is starting ({detail})")
    PRIMARY_START_TIMEOUT = ("primary_start_timeout", "PostgreSQL did not start within primary_start_timeout "
                             "({detail}): stopping it and releasing the lock")
    START_FAILED = ("start_failed", "PostgreSQL failed to start ({detail})")
    START_FAILED_RELEASE = ("start_failed_release", "PostgreSQL failed to start as primary ({detail}): releasing "
                            "the lock so a replica takes over")
    REWIND_STARTED = ("rewind_started", "rejoining ({leader}): rewinding my former primary from it")
    WAIT_LEADER_READY = ("wait_leader_ready", "waiting for ({leader}) to publish its new timeline before rejoining")
    REWIND_RUNNING = ("rewind_running", "rewinding in progress")
    REWIND_FAILED = ("rewind_failed", "pg_rewind from ({leader}) failed ({detail})")
    REWIND_FAILED_RECLONE = ("rewind_failed_reclone", "pg_rewind failed ({detail}): removing the data directory to "
                             "clone again (remove_data_directory_on_rewind_failure)")
    DIVERGED = ("diverged", "my WAL diverged from ({leader})'s timeline: {detail}")
    DIVERGED_RECLONE = ("diverged_reclone", "my WAL diverged from ({leader}) and pg_rewind is off: removing the data "
                        "directory to clone again (remove_data_directory_on_diverged_timelines)")

    SWITCHOVER_DEMOTE = ("switchover_demote", "switchover to {detail}: checkpoint, clean stop, handing the lock over "
                         "once it has the shutdown checkpoint")
    SWITCHOVER_SCHEDULED = ("switchover_scheduled", "no action: I am ({me}), the leader; switchover scheduled {detail}")
    SWITCHOVER_STALE = ("switchover_stale", "discarding the failover request: {detail}")
    SWITCHOVER_NO_CANDIDATE = ("switchover_no_candidate", "switchover is not possible: {detail}; request discarded")
    FAILOVER_TO_ME = ("failover_to_me", "no leader: I am the requested candidate, taking the lock and promoting")
    FAILOVER_OTHER = ("failover_other", "no leader: waiting for the requested candidate {detail} to take over")
    FAILSAFE_LEADER_ALIVE = ("failsafe_leader_alive", "no leader key, but the primary's failsafe call reached me "
                             "{detail}: it still serves, not racing")
    PAUSED = ("paused", "PAUSE: no action: {detail}")
    PAUSED_RELEASE = ("paused_release", "PAUSE: I hold the lock but PostgreSQL is not running as primary: "
                      "releasing it")
    REQUEST_RESTART = ("request_restart", "restarting PostgreSQL as requested")
    REQUEST_RELOAD = ("request_reload", "reloading the configuration as requested")
    REQUEST_REINIT = ("request_reinit", "reinitializing as requested: removing the data directory to clone again")
    REQUEST_REFUSED = ("request_refused", "refused the {detail}")

    def __init__(self, code: str, template: str) -> None:
        self.code = code
        self.template = template

    def render(self, *, me: str = "", leader: str | None = "", detail: str = "") -> str:
        return self.template.format(me=me, leader=leader or "none", detail=detail)
