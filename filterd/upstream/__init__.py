"""Outbound DNS: upstream health and exchanges."""
