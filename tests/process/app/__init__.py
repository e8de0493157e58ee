"""A small worker app that the process tests run with real ``conveyor worker`` subprocesses.

``jobs`` holds the definitions (imported by the tests to enqueue), ``worker`` the handlers and
the Worker objects (imported only by the subprocesses), ``ledger`` the side table in which every
handler execution is recorded, independently of the queue's own bookkeeping.
"""
