"""Grade learners' notebooks: ``python -m llama3.grade PATH`` (the same as ``python -m llama3 grade PATH``).

The grader lives in ``llama3.grading``; this module keeps the historical entry point and names.
"""

import sys

from llama3.grading import *  # noqa: F403
from llama3.grading import main

if __name__ == "__main__":
    sys.exit(main())
