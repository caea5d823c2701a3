import sys

from ctxenergy.cli import main

sys.exit(main())
