"""Preloaded first by the fork server that worker processes fork from, and by nothing else:
it makes that server ignore SIGINT.

A terminal's Ctrl-C reaches the whole process group. multiprocessing's fork server protects
itself from it only once it has imported the modules it preloads, which takes ~0.4 s of a
build's first second; a Ctrl-C then printed "Traceback ... KeyboardInterrupt" from the
server. The build process handles Ctrl-C for everyone (it stops the workers and exits 130),
so the server, and the workers forked from it, ignore it from the start. Importing this
module anywhere else would make that process deaf to Ctrl-C: only the preload list names it.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
