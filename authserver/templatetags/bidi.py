"""{% load bidi %}: {{ client|isolated }} shows a name others chose without letting it reorder the
page around it (authserver/bidi.py)."""

from django import template

from authserver import bidi

register = template.Library()
register.filter("isolated", bidi.isolated)
