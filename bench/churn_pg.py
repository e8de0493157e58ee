"""The shared dead-row churn test (pg_churn.py) with Conveyor as one more PostgreSQL peer.

Run with the peers copy's interpreter, in the peers copy (bench/run_pg.py does this):

    cd .bench/peers && .venv/bin/python /path/to/bench/churn_pg.py \
        --extra-peer conveyor=/path/.venv/bin/python:/path/bench/peer_conveyor_pg.py \
        --pg-url postgresql://postgres@127.0.0.1:PORT/postgres --only conveyor --total 1000000

Everything after the --extra-peer options goes to pg_churn.py unchanged: the method, the
figures and the results/churn-<tag>.json layout are the shared test's own. pg_churn.py knows
only the runner's built-in peers; this adds the extra ones to the runner's list (as the
runner's own --extra-peer does) before handing over.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    sys.path.insert(0, os.getcwd())  # the peers copy: runner, pg_churn, benchlib
    import pg_churn
    import runner

    rest: list[str] = []
    args = iter(sys.argv[1:])
    for arg in args:
        if arg == "--extra-peer":
            spec = next(args)
            pid, more = spec.split("=", 1)
            py, module, *variant = more.split(":")
            runner.PEERS.append(
                (
                    pid,
                    os.path.abspath(py),
                    os.path.abspath(module),
                    variant[0] if variant else "",
                    None,
                )
            )
        else:
            rest.append(arg)
    sys.argv = [os.path.join(runner.HERE, "pg_churn.py"), *rest]
    pg_churn.main()


if __name__ == "__main__":
    main()
