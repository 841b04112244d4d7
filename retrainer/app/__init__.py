"""The application: the ``retrainer`` command line, the demo and the status view.

The top layer: it runs flows and starts deployments, so nothing in the core imports it.
"""
