# expect: 2 failed to import: SystemExit: a plugin must not exit the process
import sys

sys.exit("a plugin must not exit the process")
