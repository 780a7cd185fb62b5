"""Run lessons on scripted backends in a child process (the resume tests kill it).
Arguments: DB LESSONS DELAY [DATA_PATH]; DB is a DuckDB file or a lake target (then with its
data path)."""

import sys

from conftest import adds_only_student, teacher_reply

from teachloop import RunConfig, run_lessons
from teachloop.agents.backends.scripted import ScriptedBackend

if __name__ == "__main__":
    db, lessons, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    data_path = sys.argv[4] if len(sys.argv) > 4 else None
    config = RunConfig.validated(
        {
            "db": db,
            "run_id": "killed-run",
            "lessons": lessons,
            "concurrency": 4,
            "topics": ["arithmetic.addition", "arithmetic.multiplication"],
            **({"store": {"data_path": data_path}} if data_path else {}),
        }
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
