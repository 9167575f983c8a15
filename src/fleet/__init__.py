"""fleet: many Flask apps on one Debian server, behind nginx and the uWSGI Emperor."""

__version__ = "0.1.0"
