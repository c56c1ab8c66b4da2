import sys

from eventstream.cli import main

sys.exit(main())
