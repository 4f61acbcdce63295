"""Equinix Metal behind the Driver protocol: API client, sessions, device cache, tags and the providerSpec."""
