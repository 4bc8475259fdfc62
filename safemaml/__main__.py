import sys

from safemaml.cli import main

sys.exit(main())
