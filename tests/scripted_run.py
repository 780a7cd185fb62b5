"""Run lessons on scripted backends in a child process (the resume tests kill it)."""

import sys
from pathlib import Path

from conftest import adds_only_student, teacher_reply

from teachloop import RunConfig, run_lessons
from teachloop.agents.backends.scripted import ScriptedBackend

if __name__ == "__main__":
    db, lessons, delay = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    config = RunConfig(
        db=db,
        run_id="killed-run",
        lessons=lessons,
        concurrency=4,
        topics=("arithmetic.addition", "arithmetic.multiplication"),
    )
    student = ScriptedBackend(adds_only_student, delay_s=delay)
    result = run_lessons(
        config,
        teacher_backend=ScriptedBackend(teacher_reply, delay_s=delay),
        student_backend=student,
        progress=False,
    )
    print(
        f"RESULT lessons={result.lessons} resumed={result.lessons_resumed} "
        f"calls={len(student.requests)}"
    )
