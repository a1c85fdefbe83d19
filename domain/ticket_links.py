"""Ticket URLs from templates, in the ExtraHop seed's style: `$ticket_id` (and `$oid`) replaced."""

import urllib.parse


def render_ticket_url(template: str, ticket_id: str, oid: str) -> str:
    """Both values percent-encoded, so that neither can change the URL's shape."""
    quoted = {"$ticket_id": ticket_id, "$oid": oid}
    out = template
    for name, value in quoted.items():
        out = out.replace(name, urllib.parse.quote(value, safe=""))
    return out
