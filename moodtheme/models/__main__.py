"""``python -m moodtheme.models``: see `moodtheme.models.summary`."""

import sys

from moodtheme.models.summary import main

sys.exit(main())
