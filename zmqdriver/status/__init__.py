"""``zmqdriver-status``: what a broker's management tools would show, without a broker.

``model`` and ``render`` are pure; ``collect`` does the I/O (matchmaker,
notification store, PINGs) through the driver's own construction code;
``cli`` is the command and ``exporter`` the Prometheus endpoint and page.
"""
