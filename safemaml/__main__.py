import sys

from safemaml.cli.main import main

sys.exit(main())
