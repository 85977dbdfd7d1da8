import sys

from devstack.msim import main

sys.exit(main())
