"""Thin Tornado handlers: each translates WebSocket frames or HTTP requests into Node calls."""
