"""The `teachloop` command in a child process, with scripted backends in place of models.

Usage: python tests/scripted_cli.py [teachloop arguments...] (PYTHONPATH must hold tests/);
$SCRIPTED_DELAY_S slows every model call down so that a test can interrupt the run mid-way.
"""

import os
import signal
import sys

from conftest import adds_only_student, teacher_reply

from teachloop import cli
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.graphs import runner


def scripted_backends(*args: object) -> tuple[ScriptedBackend, ScriptedBackend]:
    delay = float(os.environ.get("SCRIPTED_DELAY_S", "0"))
    return (
        ScriptedBackend(teacher_reply, name="teacher", delay_s=delay),
        ScriptedBackend(adds_only_student, name="student", delay_s=delay),
    )


if __name__ == "__main__":
    # A test suite started in the background (`make test &`, some CI runners) passes SIGINT
    # down as ignored, and Python then never raises KeyboardInterrupt. The Ctrl-C test needs the
    # process a user at a terminal would have.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runner.build_backends = scripted_backends
    sys.exit(cli.main(sys.argv[1:]))
