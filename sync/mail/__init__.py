"""Message parsing: MIME, text, document references, the document registry, and the
prepare step that turns raw bytes into what the database stores. No database, no network."""
