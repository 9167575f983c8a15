"""fleet: many Flask apps on one Debian server, behind nginx and the uWSGI Emperor."""

__version__ = "0.1.0"

from fleet.codecache import install_for_this_build

install_for_this_build()  # before any of fleet's dataclasses is made (zipapp only)
