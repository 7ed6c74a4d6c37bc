"""Presenting results: tables, JSON and CSV records, every chart, and the ``run`` HTML page.

May import: errors, files. Nothing that runs a model; matplotlib and Jinja only inside the
functions that draw or render, so importing this package stays cheap.
"""
