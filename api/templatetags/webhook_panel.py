"""``{% webhook_panel agent as hook %}``: the agent page's webhook section (agents/_webhook.html).

The agent page's view belongs to the agents pages; this tag lets the section compute what it
shows (absolute URL, pending one-time reveal) from the request without changing that view.
"""

from django import template

from agents.webhook_views import panel_context

register = template.Library()


@register.simple_tag(takes_context=True)
def webhook_panel(context, agent):
    return panel_context(context["request"], agent)
