"""Pully: realtime messaging on Tornado. WebSocket pub/sub with per-channel functions."""

__version__ = "0.1.0"
