"""BlueRockTEL workbench: CDR mediation, rating, billing, CRM and a white-label portal.

Importing this package is cheap and never imports a UI library (panel, ipywidgets, voila,
papermill, IPython): those live in ``portal_app/``, ``dashboards/`` and ``pipelines/``.
"""

__version__ = "0.1.0"
