"""Data side of xtmail: schema, store, MIME parsing, association rules, IMAP sync, CLI."""
