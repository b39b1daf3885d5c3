import sys

from tokenzero.cli import main

sys.exit(main())
