"""The worker runtime: fetcher, executor, completer, lease keeper, maintenance."""
