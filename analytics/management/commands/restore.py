"""manage.py restore FILE --yes | --offsite NAME|latest --yes: restore a backup into an empty database."""

from pathlib import Path
from typing import Any

import dj_database_url
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics import backups


class Command(BaseCommand):
    help = "Restore a backup made by `manage.py backup` into an empty database (the configured one by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help="A backup file (.dump for PostgreSQL, .sqlite3 for SQLite).")
        parser.add_argument(
            "--offsite",
            metavar="NAME",
            help="Download this off-site backup (`latest`: the newest) into BACKUP_DIR, then restore it.",
        )
        parser.add_argument("--yes", action="store_true", help="Really restore (required).")
        parser.add_argument("--database-url", help="Restore into this database instead of DATABASE_URL.")

    def handle(
        self,
        *args: Any,
        file: str | None,
        yes: bool = False,
        database_url: str | None = None,
        offsite: str | None = None,
        **options: Any,
    ) -> None:
        database = dj_database_url.parse(database_url) if database_url else settings.DATABASES["default"]
        if bool(file) == bool(offsite):
            raise CommandError("Name a backup file or --offsite NAME (or --offsite latest), not both.")
        what = file or f"the off-site backup {offsite}"
        if not yes:
            raise CommandError(f"This restores {what} into database {database['NAME']}. Run again with --yes to do it.")
        if offsite:
            try:
                file = str(backups.fetch_offsite_backup(name=offsite, folder=Path(settings.BACKUP_DIR)))
            except backups.BackupError as error:
                raise CommandError(str(error))
            self.stderr.write(f"Downloaded {file}")

        def progress(done: int, total: int, what: str) -> None:
            self.stderr.write(f"\r[{done}/{total}] {what[:60]:<60}", ending="")
            self.stderr.flush()

        assert file is not None  # named, or downloaded above
        try:
            backups.restore_backup(path=Path(file), database=database, progress=progress)
        except backups.BackupError as error:
            raise CommandError(str(error))
        self.stderr.write("")
        self.stdout.write(self.style.SUCCESS(f"Restored {file} into {database['NAME']}."))
