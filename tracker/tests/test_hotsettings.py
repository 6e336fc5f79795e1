"""Settings snapshots: read once, read again after any setting changes."""

from django.conf import settings
from django.test import override_settings

from tracker.hotsettings import snapshot

builds: list[str] = []


@snapshot
def pod_name() -> str:
    builds.append(settings.POD_NAME)
    return settings.POD_NAME


def test_a_snapshot_reads_the_settings_once_and_again_after_a_change():
    builds.clear()
    original = settings.POD_NAME
    assert pod_name() == original
    assert pod_name() == original
    assert builds == [original]  # the second call read nothing

    with override_settings(POD_NAME="pod-under-test"):
        assert pod_name() == "pod-under-test"
    assert pod_name() == original  # leaving the override is a change too
    assert builds == [original, "pod-under-test", original]


def test_the_request_path_sees_overridden_settings(settings):
    from tracker.middleware import tracking_settings

    settings.TRACKING_IGNORE_PATHS = ["/ignored-here"]
    assert tracking_settings().ignore_paths == ("/ignored-here",)
    settings.TRACKING_ENABLED = False
    assert tracking_settings().enabled is False
