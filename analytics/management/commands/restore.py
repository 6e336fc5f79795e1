"""manage.py restore FILE --yes: restore a backup into an empty database."""

from pathlib import Path

import dj_database_url
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics import backups


class Command(BaseCommand):
    help = "Restore a backup made by `manage.py backup` into an empty database (the configured one by default)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="A backup file (.dump for PostgreSQL, .sqlite3 for SQLite).")
        parser.add_argument("--yes", action="store_true", help="Really restore (required).")
        parser.add_argument("--database-url", help="Restore into this database instead of DATABASE_URL.")

    def handle(self, *args, file, yes=False, database_url=None, **options):
        database = dj_database_url.parse(database_url) if database_url else settings.DATABASES["default"]
        if not yes:
            raise CommandError(f"This restores {file} into database {database['NAME']}. Run again with --yes to do it.")

        def progress(done: int, total: int, what: str) -> None:
            self.stderr.write(f"\r[{done}/{total}] {what[:60]:<60}", ending="")
            self.stderr.flush()

        try:
            backups.restore_backup(path=Path(file), database=database, progress=progress)
        except backups.BackupError as error:
            raise CommandError(str(error))
        self.stderr.write("")
        self.stdout.write(self.style.SUCCESS(f"Restored {file} into {database['NAME']}."))
