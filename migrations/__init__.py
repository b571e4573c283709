"""pfdb's schema migrations (peewee-migrate files); installed as ``pfdb._migrations``."""
