"""The tests' forked Python children behave as started ones do (tests/processes.py).

Each property here is one a test that uses ``processes`` relies on: its own process, the
environment, folder, arguments and streams it is given, the exit code and signals of a real
interpreter, and an interpreter shutdown that closes what the child left open.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import textwrap

import processes
import pytest

PY = sys.executable


def test_a_child_is_a_process_of_its_own_with_the_environment_folder_and_arguments_given(tmp_path):
    code = "import os, sys; print(os.getpid(), os.getcwd(), os.environ.get('ONLY_HERE'), sys.argv[1:], 'PATH' in os.environ, sep='|')"
    result = processes.run(
        [PY, "-c", code, "one", "two"], capture_output=True, text=True, cwd=tmp_path, env={"ONLY_HERE": "yes"}
    )
    pid, cwd, value, argv, has_path = result.stdout.rstrip().split("|")
    assert result.returncode == 0, result.stderr
    assert int(pid) != os.getpid() and cwd == str(tmp_path) and value == "yes"
    assert argv == "['one', 'two']" and has_path == "False"  # the environment given, nothing more


def test_exit_codes_and_uncaught_exceptions_are_a_real_interpreters():
    assert processes.run([PY, "-c", "import sys; sys.exit(3)"]).returncode == 3
    assert processes.run([PY, "-c", "import sys; sys.exit('bad')"], capture_output=True, text=True).stderr == "bad\n"
    failed = processes.run([PY, "-c", "raise ValueError('boom')"], capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.splitlines()[-1] == "ValueError: boom"
    with pytest.raises(processes.CalledProcessError):
        processes.run([PY, "-c", "raise SystemExit(2)"], check=True)


def test_signals_reach_the_child_kill_9_and_ctrl_c_alike():
    child = processes.Popen([PY, "-c", "import time; print('up', flush=True); time.sleep(60)"], stdout=processes.PIPE)
    assert child.stdout.readline() == b"up\n"
    child.kill()
    assert child.wait(timeout=10) == -signal.SIGKILL
    code = "import time\ntry:\n    print('up', flush=True); time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted')\n    raise SystemExit(130)"
    child = processes.Popen([PY, "-c", code], stdout=processes.PIPE, text=True)
    assert child.stdout.readline() == "up\n"
    child.send_signal(signal.SIGINT)
    assert child.communicate(timeout=10) == ("interrupted\n", None) and child.returncode == 130


def test_a_script_sees_its_folder_first_and_m_runs_a_module(tmp_path):
    (tmp_path / "helper.py").write_text("WHERE = 'beside the script'\n")
    script = tmp_path / "main.py"
    script.write_text("import sys, helper\nprint(helper.WHERE, sys.argv[0] == __file__, __name__)\n")
    assert (
        processes.run([PY, str(script)], capture_output=True, text=True).stdout == "beside the script True __main__\n"
    )
    result = processes.run([PY, "-m", "pfdb", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: pfdb")


def test_stdin_is_fed_and_a_timeout_kills_the_child():
    result = processes.run(
        [PY, "-c", "import sys; print(sys.stdin.read()[::-1])"], input="abc", capture_output=True, text=True
    )
    assert result.stdout == "cba\n"
    with pytest.raises(processes.TimeoutExpired):
        processes.run([PY, "-c", "import time; time.sleep(60)"], timeout=0.5)


def test_children_run_side_by_side(tmp_path):
    """Each waits for a file only the other writes: it finishes only if both run at once."""
    wait_then_write = (
        "import os, sys, time\nopen(sys.argv[2], 'w').close()\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)"
    )
    a, b = tmp_path / "a", tmp_path / "b"
    children = [processes.Popen([PY, "-c", wait_then_write, str(x), str(y)]) for x, y in ((a, b), (b, a))]
    assert [child.wait(timeout=30) for child in children] == [0, 0]


def test_what_a_child_leaves_open_is_closed_by_its_interpreters_shutdown(tmp_path):
    """A SQLite connection never closed: shutdown closes it, and the last close removes the -wal."""
    path = tmp_path / "left.db"
    code = textwrap.dedent(f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        import atexit; atexit.register(print, "atexit ran")
    """)
    result = processes.run([PY, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "atexit ran\n", result.stderr
    assert not (tmp_path / "left.db-wal").exists()
    assert sqlite3.connect(path).execute("SELECT x FROM t").fetchall() == [(1,)]


def test_only_this_python_with_c_m_or_a_script_is_forked():
    with pytest.raises(ValueError, match="this Python only"):
        processes.Popen(["pg_dump", "--version"])
    with pytest.raises(ValueError, match="-c and -m only"):
        processes.Popen([PY, "-X", "importtime", "-c", "pass"])


def test_what_a_readline_left_buffered_is_in_communicate_and_crlf_reaches_stdin_as_sent():
    child = processes.Popen([PY, "-c", "print('a'); print('b'); print('c')"], stdout=processes.PIPE, text=True)
    assert child.stdout.readline() == "a\n"
    assert child.communicate(timeout=30) == ("b\nc\n", None)
    code = "import sys; print(repr(sys.stdin.read()))"
    assert processes.run([PY, "-c", code], input=b"x\r\ny\r", capture_output=True).stdout == b"'x\\r\\ny\\r'\n"


def test_communicate_after_a_timeout_gets_the_whole_output_and_an_ended_child_can_be_killed(tmp_path):
    go = tmp_path / "go"
    code = f"import os, time\nprint('early', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\nprint('late')"
    child = processes.Popen([PY, "-c", code], stdout=processes.PIPE, text=True)
    with pytest.raises(processes.TimeoutExpired):
        child.communicate(timeout=0.3)
    go.touch()
    assert child.communicate(timeout=30) == ("early\nlate\n", None) and child.returncode == 0
    child.kill()  # ended and reaped: nothing to signal, no error (as subprocess)
