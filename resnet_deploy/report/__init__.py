"""Presenting results: tables, JSON and CSV records, and the ``run`` HTML page.

May import: errors, files. Nothing that runs a model.
"""
