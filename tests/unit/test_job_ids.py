"""The job ids Conveyor makes: 16 URL-safe characters, distinct, never read as an option."""

from __future__ import annotations

import re

from conveyor._building import new_job_ids


def test_made_ids_are_sixteen_url_safe_characters_and_never_begin_with_a_dash() -> None:
    # Without the rule, 20,000 ids hold one that begins with "-" but for a chance of ~1e-137.
    ids = new_job_ids(20_000)
    assert len(set(ids)) == 20_000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{15}", job_id) for job_id in ids)


def test_one_id_at_a_time_follows_the_same_rule() -> None:
    ids = [new_job_ids(1)[0] for _ in range(5_000)]
    assert not [job_id for job_id in ids if job_id.startswith("-")]
