"""The database: schema and migrations, the write side (writer), the read side
(:class:`~xtmail.sync.db.mailstore.MailStore`) and search."""
