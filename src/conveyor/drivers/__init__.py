"""The storage contract every backend implements; see :mod:`conveyor.drivers.protocol`."""
