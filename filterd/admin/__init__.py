"""The admin HTTP room: health, readiness and metrics endpoints."""
