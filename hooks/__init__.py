"""Metacontroller hooks that manage Equinix Metal devices for MCM's Machine API."""

__version__ = "0.1.0"
PROJECT = "metal-machine-hooks"
