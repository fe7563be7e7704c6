"""A simulated Microsoft tenant (token endpoint + Graph audit logs) for the demo and tests.

Standalone on purpose: nothing here imports the collector, and the collector never
imports this; `siem-exporter demo`/`simulate` and the tests wire the two together.
"""

from exporter.sim.ca import TestPki, write_test_pki
from exporter.sim.scenario import SCENARIOS, Scenario
from exporter.sim.tenant import SimulatedTenant

__all__ = ["SCENARIOS", "Scenario", "SimulatedTenant", "TestPki", "write_test_pki"]
