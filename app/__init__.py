"""The xtmail application: the command line, the demo host, sample data and the private
PostgreSQL runner. Built on the library packages (sync, widgets, dialogs); they never import it."""
