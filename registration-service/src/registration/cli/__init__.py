"""``webhooks``: the operator's command-line tool.

It talks to the management API over HTTP only (``requests``), so it works against any running
registration service; it imports nothing of the server but the signing functions of
``webhooks_core`` (for ``webhooks verify``).  It is installed with the registration service
(``console_scripts`` entry point) because it is the API's own client and moves with it.
"""
