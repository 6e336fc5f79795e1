"""Writes of analytics, one module per sub-domain: collect (events sent to /collect), tokens (API
tokens), aggregation (hourly/daily rollups, live aggregation, the rollup cache's warming) and
retention (pruning raw events). Backups live in analytics/backups.py (external tools, no model).
"""
