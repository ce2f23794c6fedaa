"""Inbound DNS: UDP and TCP listeners feeding the pipeline."""
