"""The server API (``POST /api/<method>``, docs/server-api.md): the methods and their params
(:mod:`.methods`, :mod:`.schemas`), what each node does for a cluster-wide call (:mod:`.ops`),
and how the nodes ask each other (:mod:`.cluster`)."""
