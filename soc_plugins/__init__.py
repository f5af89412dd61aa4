"""Built-in SoC plugins (installed as ``odimo_moo.soc_plugins``)."""
