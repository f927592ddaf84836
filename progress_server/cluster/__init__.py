"""Cluster mode: several nodes sharing one PostgreSQL database, its queue and its event log."""
