"""``python -m mm_rerank_components.cli`` is ``mm-rerank``."""

import sys

from mm_rerank_components.cli import main

sys.exit(main())
