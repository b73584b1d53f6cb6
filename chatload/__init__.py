"""The load-testing client behind ``loadtest.py``: raw WebSocket sockets on gevent.

Modules: ``wire`` (handshake and frames), ``login`` (the login form), ``user`` (what one
virtual user does and counts), ``run`` (one load process), ``report`` (merging, the table,
JSON and the plot), ``server`` (the server's memory and CPU from /proc).
"""
