"""The fault suite's settings: the test settings, with the production heartbeat.

config/settings_test.py makes heartbeats fast (a stamp a second, silent 8 s means lost) so that
the normal suite's reaper tests wait seconds. The fault suite measures recovery as an operator
would see it, so its processes keep the values config/settings.py reads (their defaults, or
CONVEYOR_HEARTBEAT_INTERVAL / CONVEYOR_HEARTBEAT_TIMEOUT from the environment).
"""

from importlib import import_module

from config.settings_test import *  # noqa: F403

# The module the test settings built on (they set the environment it needs before importing it).
production = import_module("config.settings")

CONVEYOR_HEARTBEAT_INTERVAL = production.CONVEYOR_HEARTBEAT_INTERVAL
CONVEYOR_HEARTBEAT_TIMEOUT = production.CONVEYOR_HEARTBEAT_TIMEOUT
