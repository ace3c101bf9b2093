"""Devices (imported as ``rkd_edge.devices``): the measurement protocol, Jetson profiles and telemetry."""
