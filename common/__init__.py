"""Request plumbing shared by the REST API (``api``) and the inbound webhook endpoint
(``agents.webhook_views``): the one error format, safe JSON body parsing and rate limits counted
in Redis; Conveyor's version (``common.version``); and the faster reading of Postgres
timestamps every connection gets (``common.timestamps``).

Plain Python and Django only: nothing here imports ``agents`` or ``api``, so both can build on
it without importing each other. No models, so it is not an installed app.
"""
