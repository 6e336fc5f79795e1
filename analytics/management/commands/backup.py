"""manage.py backup: write a timestamped backup into BACKUP_DIR and print its path."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from analytics import backups


class Command(BaseCommand):
    help = (
        "Back up the database into BACKUP_DIR (pg_dump custom format, or SQLite's backup API); keeps BACKUP_KEEP;"
        " copies it off-site when BACKUP_S3_BUCKET is set. --list shows the backups instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--list", dest="show_list", action="store_true", help="List the local and off-site backups."
        )

    def handle(self, *args: object, show_list: bool = False, **options: object) -> None:
        if show_list:
            for path in backups.list_backups():
                self.stdout.write(f"local    {path}")
            if backups.offsite_enabled():
                try:
                    for name in backups.list_offsite_backups():
                        self.stdout.write(f"offsite  {name}")
                except backups.BackupError as error:
                    raise CommandError(str(error))
            return

        def progress(done: int, total: int, what: str) -> None:
            self.stderr.write(f"\r[{done}/{total}] {what[:60]:<60}", ending="")
            self.stderr.flush()

        try:
            with backups.exclusive():
                path = backups.write_backup(now=timezone.now(), progress=progress)
        except backups.BackupError as error:
            raise CommandError(str(error))
        except OSError as error:
            raise CommandError(f"Cannot write to BACKUP_DIR {settings.BACKUP_DIR}: {error}")
        self.stderr.write("")
        self.stdout.write(str(path))
