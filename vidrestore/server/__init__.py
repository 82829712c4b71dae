"""``vidrestore serve``: the HTTP API and web page (``pip install 'vidrestore[serve]'``)."""
