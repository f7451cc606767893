import sys

from bonemet.cli.main import main

sys.exit(main())
