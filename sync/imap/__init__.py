"""IMAP: the connection, folder sync, the account loop, the Qt sync service, settings and
credentials."""
