"""manage.py backup: write a timestamped backup into BACKUP_DIR and print its path."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics import backups


class Command(BaseCommand):
    help = "Back up the database into BACKUP_DIR (pg_dump custom format, or SQLite's backup API); keeps BACKUP_KEEP."

    def handle(self, *args, **options):
        def progress(done: int, total: int, what: str) -> None:
            self.stderr.write(f"\r[{done}/{total}] {what[:60]:<60}", ending="")
            self.stderr.flush()

        try:
            with backups.exclusive():
                path = backups.write_backup(progress=progress)
        except backups.BackupError as error:
            raise CommandError(str(error))
        except OSError as error:
            raise CommandError(f"Cannot write to BACKUP_DIR {settings.BACKUP_DIR}: {error}")
        self.stderr.write("")
        self.stdout.write(str(path))
