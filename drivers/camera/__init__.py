"""Cameras: a worker process per camera (capture), its analytics, and the driver that watches over it."""
