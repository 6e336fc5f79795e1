from typing import Any

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.utils.functional import cached_property

# Filtered lists count at most this many rows: beyond it, pages past the cap are not offered.
COUNT_CAP = 100_000


class EstimatedCountPaginator(Paginator):
    """Never COUNT(*) a 10M-row table per admin page (it takes seconds).

    Unfiltered: PostgreSQL's row estimate (kept by autovacuum). Filtered: an exact count up to
    COUNT_CAP rows, which the indexes answer quickly. `is_estimate` / `is_capped` say which, so
    the page can say "about" or "at least" instead of passing either off as exact.
    """

    object_list: QuerySet[Any]  # admin changelists page querysets
    is_estimate = False

    @cached_property
    def count(self) -> int:
        query = self.object_list.query
        if connection.vendor == "postgresql" and not query.where:
            with connection.cursor() as cursor:
                # Autovacuum never estimates a partitioned table itself: add up its partitions'.
                cursor.execute(
                    "SELECT coalesce((SELECT sum(greatest(reltuples, 0)) FROM pg_class WHERE oid IN"
                    " (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s))),"
                    " (SELECT reltuples FROM pg_class WHERE relname = %s))::bigint",
                    [self.object_list.model._meta.db_table] * 2,
                )
                row = cursor.fetchone()
            if row and row[0] > 10_000:
                self.is_estimate = True
                return int(row[0])
        return self.object_list[:COUNT_CAP].count()

    @property
    def is_capped(self) -> bool:
        return not self.is_estimate and self.count >= COUNT_CAP
