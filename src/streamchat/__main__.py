import sys

from streamchat.cli import main

sys.exit(main())
