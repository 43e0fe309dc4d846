"""Logs, metrics, traces and health endpoints."""
