"""No models: Conveyor keeps its own tables. The module exists so that Django sends this app
``post_migrate``, when ``migrate`` makes the tables of the queues in the migrated database
(see ``apps.py``)."""
