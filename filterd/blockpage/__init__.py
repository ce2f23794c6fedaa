"""The block page: what a browser shows when a name resolves to the sinkhole.

A room of its own beside the query path: ``reason`` says what the rest of
filterd hands in (``BlockReason``, the ``Explain`` callable), ``texts`` holds
the words in each language, ``render`` builds the HTML (pure), ``server``
serves it over HTTP (aiohttp) and counts requests. docs/block-page.md is the
operator's reference.
"""
