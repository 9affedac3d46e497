"""`python -m matrix.llm.sim` runs one simulated replica (same flags as `matrix.llm.sim.server`)."""

import sys

from matrix.llm.sim.server import main

sys.exit(main())
