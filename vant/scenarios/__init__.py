"""Noise scenarios (fleets of devices, drift over time), evaluation on them, layer sensitivity, and
training fitted to a scenario."""
