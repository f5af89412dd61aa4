"""Built-in search-strategy plugins (installed as ``odimo_moo.plugins``)."""
