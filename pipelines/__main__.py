"""``python -m kmsbeam.pipelines``: the ``kmsbeam`` command line."""

import sys

from kmsbeam.pipelines.cli import main

sys.exit(main())
