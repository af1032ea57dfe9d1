"""``celery -A mailferry.worker worker``: the Celery app of the project named by the environment
variable ``MAILFERRY_PROJECT`` (the project file's path), for those who start Celery workers
with their own options; ``mailferry worker PROJECT`` does the same with the project's settings.

    MAILFERRY_PROJECT=/srv/migration/project.toml celery -A mailferry.worker worker \\
        --queues mailferry.<project name> --pool threads --concurrency 2 --without-mingle
"""

from __future__ import annotations

import os
from pathlib import Path

from mailferry.config.load import load_project
from mailferry.distributed.app import make_app

_path = os.environ.get("MAILFERRY_PROJECT")
if not _path:
    raise SystemExit("set MAILFERRY_PROJECT to the project file's path (see `mailferry worker --help`)")
app = make_app(load_project(Path(_path)))
