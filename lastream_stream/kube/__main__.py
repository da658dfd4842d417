"""``python -m lastream_stream.kube``: same as ``lastream kube-executor``."""

from lastream_stream.kube.command import kube_executor_command
from lastream_stream.logs import setup_logging
from lastream_stream.settings import LastreamSettings

settings = LastreamSettings()
setup_logging(settings.log_level, settings.log_file, settings.log_max_bytes, settings.log_backups)
kube_executor_command(prog_name="python -m lastream_stream.kube")
