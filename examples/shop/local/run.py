"""``make example``: the shop on this machine, a day of traffic, and what came of it.

Runs on SQLite in ``.shop/`` unless ``SHOP_DATABASE_URL`` names another database (a
``postgresql://...`` one); exits 0 when everything happened as it should.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from conveyor import Queue
from examples.shop.local.scenario import problems, report, run_scenario
from examples.shop.local.stack import ROOT, ShopStack

WORKDIR = Path(os.environ.get("SHOP_WORKDIR", ROOT / ".shop"))


def exit_status(code: int) -> str:
    # uvicorn ends itself with the signal it shut down on, once it has shut down cleanly.
    return f"stopped by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"


async def main() -> int:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    database_url = os.environ.get("SHOP_DATABASE_URL", f"sqlite:///{WORKDIR / 'shop.db'}")
    started = time.monotonic()
    print(f"starting the shop on {database_url.split('?')[0]} (logs in {WORKDIR})", flush=True)
    with ShopStack(database_url, WORKDIR) as shop:
        print(
            f"  API {shop.api_url}, SMTP sink on port {shop.sink.port}, "
            f"webhook receiver at {shop.receiver.url('')}",
            flush=True,
        )
        async with Queue.from_url(database_url) as queue:
            outcome = await run_scenario(shop.api_url, shop.sink, shop.receiver, queue)
    print(report(outcome))
    codes = ", ".join(f"{name} {exit_status(code)}" for name, code in shop.exit_codes.items())
    print(f"stopped: {codes} ({time.monotonic() - started:.1f}s in all)")
    found = problems(outcome)
    for problem in found:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
