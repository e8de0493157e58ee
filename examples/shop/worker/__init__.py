"""The worker service: handlers for every definition of ``examples.shop.jobs``."""
