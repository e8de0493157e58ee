"""The KEYS each Lua script of a queue is called with, by name: what the scripts' headers
declare and the stubs send (a test compares them)."""

from __future__ import annotations

from typing import Final

_JOB_SETS: Final = ("scheduled", "retrying", "active", "completed", "failed", "cancelled")
_BY_SEQ: Final = (
    "queued_by_seq",
    "scheduled_by_seq",
    "retrying_by_seq",
    "completed_by_seq",
    "failed_by_seq",
    "cancelled_by_seq",
)

# The KEYS each script is called with, by name, and whether more may follow: what the scripts'
# headers must declare (a test compares them). Names are ``QueueKeys`` attributes, except the
# per-call ones (receipts; a state's set and index) and the shared ones (workers, leaders).
# The keys of the groups (see lua/includes/groups.lua), which every script that places or
# takes jobs receives.
_GROUPS: Final = ("groups", "ring", "group_idle", "group_records")

SCRIPT_KEYS: Final[dict[str, tuple[tuple[str, ...], bool]]] = {
    "job_insert_many": (
        ("jobs", "meta", "ready", "queued", "scheduled", "wake", *_BY_SEQ[:2], "dead", *_GROUPS),
        True,
    ),
    "job_insert_dedup": (
        (
            *("jobs", "meta", "ready", "queued", "scheduled", "wake", *_BY_SEQ[:2], "dead"),
            *("dedup", "dedup_jobs", *_GROUPS),
        ),
        True,
    ),
    "job_fetch": (
        (
            *("jobs", "meta", "ready", "queued", "dead", "scheduled", "retrying", "active"),
            *("cancelled", "wake", *_BY_SEQ[:3], "cancelled_by_seq"),
            *("rate_log", "rate_block", *_GROUPS, "receipt", "previous_receipt"),
        ),
        False,
    ),
    "job_extend_leases": (("jobs", "active"), False),
    "job_finish_many": (
        (
            *("jobs", "meta", "ready", "queued", *_JOB_SETS, "wake", *_BY_SEQ, "dead"),
            *("dedup", "dedup_jobs", "expiring", *_GROUPS),
        ),
        False,
    ),
    "job_rescue_many": (
        (
            *("jobs", "meta", "ready", "queued", "active", "failed", "cancelled", "wake"),
            *("queued_by_seq", "failed_by_seq", "cancelled_by_seq", "dead", "expiring"),
            *_GROUPS,
        ),
        False,
    ),
    "job_promote_due": (
        (
            *("jobs", "meta", "ready", "queued", "scheduled", "retrying", "wake", *_BY_SEQ[:3]),
            *("dead", *_GROUPS),
        ),
        False,
    ),
    "job_cancel_many": (
        (
            *("jobs", "queued", "dead", "scheduled", "retrying", "cancelled"),
            *("queued_by_seq", "scheduled_by_seq", "retrying_by_seq", "cancelled_by_seq"),
            *("meta", *_GROUPS),
        ),
        False,
    ),
    "job_retry_many": (
        (
            *("jobs", "meta", "ready", "queued", "failed", "cancelled", "wake"),
            *("queued_by_seq", "failed_by_seq", "cancelled_by_seq", "dead", "expiring"),
            *_GROUPS,
        ),
        False,
    ),
    "job_purge": (
        (
            *("jobs", "set", "by_seq", "ready", "dead", "meta", "dedup", "dedup_jobs"),
            *("expiring", *_GROUPS),
        ),
        False,
    ),
    "job_prune_finished": (
        ("jobs", "set", "by_seq", "dedup", "dedup_jobs", "expiring"),
        False,
    ),
    "job_prune_expired": (
        (
            *("jobs", "expiring", "completed", "failed", "completed_by_seq", "failed_by_seq"),
            *("dedup", "dedup_jobs"),
        ),
        False,
    ),
    "job_delete_many": (
        (
            *("jobs", "completed", "failed", "cancelled"),
            *("completed_by_seq", "failed_by_seq", "cancelled_by_seq"),
            *("expiring", "dedup", "dedup_jobs"),
        ),
        False,
    ),
    "job_progress_many": (("jobs",), False),
    "job_list": (("jobs", "active", *_BY_SEQ, "ready", "dead"), False),
    "queue_resume": (("meta", "wake"), False),
    "queue_notify": (("wake",), False),
    "worker_heartbeat": (("workers", "info", "order"), False),
    "leader_acquire": (("leader",), False),
    "leader_release": (("leader",), False),
    "cron_fire": (
        (
            *("jobs", "meta", "ready", "queued", "scheduled", "wake", *_BY_SEQ[:2], "dead"),
            *(*_GROUPS, "cron"),
        ),
        False,
    ),
    "rate_limit_block": (("rate_block",), False),
    "rate_limit_wait": (("rate_log", "rate_block"), False),
    "group_block": ((*_GROUPS, "meta"), False),
    "group_wait": (("ring", "meta", "group_records"), False),
    "group_prune": ((*_GROUPS, "meta"), False),
    "stats_add": (("stats",), False),
}
