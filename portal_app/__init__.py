"""The Panel apps (customer portal, staff app) and the one ASGI app that serves them.

Only this package imports Panel; ``bluerocktel`` holds the data access they render.
"""
