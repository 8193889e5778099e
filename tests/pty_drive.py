#!/usr/bin/env python3
"""pty_drive: runs a program on a pseudo-terminal, as a user at a terminal
would, for tests/e2e_interactive.sh.

  pty_drive.py LOG STDERR_FILE -- PROGRAM ARGS... < SCRIPT

SCRIPT: one step per line:
  expect TEXT      wait (at most 20 s) until TEXT appears in the output
                   since the last expect ("\\n" in TEXT is a newline)
  send TEXT        type TEXT followed by Enter
  key ctrl-d|ctrl-c   send that key
  sleep SECONDS    read output for that long
  wait             wait for the program to exit (at most 20 s)
Prints nothing; exits with the program's exit status, or 124 when an
expect or wait timed out (the output so far is in LOG either way)."""
import os, pty, select, signal, sys, termios, time

log_path, err_path = sys.argv[1], sys.argv[2]
argv = sys.argv[sys.argv.index("--") + 1:]
steps = [l.rstrip("\n") for l in sys.stdin if l.strip()]

pid, fd = pty.fork()
if pid == 0:
    e = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(e, 2)
    # NOFLSH: Ctrl-C must not discard output the program writes right after
    # it (the terminal's flush races with the program's "[stopped]" line).
    attrs = termios.tcgetattr(0)
    attrs[3] |= termios.NOFLSH
    termios.tcsetattr(0, termios.TCSANOW, attrs)
    os.execv(argv[0], argv)

out = b""
mark = 0
status = None


def read_some(timeout):
    global out
    r, _, _ = select.select([fd], [], [], timeout)
    if r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            return False
        if not data:
            return False
        out += data
        return True
    return False


def finish(rc):
    if rc == 124:  # say where the program was
        try:
            st = open("/proc/%d/status" % pid).read()
            chans = []
            for t in sorted(os.listdir("/proc/%d/task" % pid)):
                chans.append(open("/proc/%d/task/%s/wchan" % (pid, t)).read())
            out_note = "\n[pty_drive: timed out; %s; threads in %s]\n" % (
                " ".join(l for l in st.splitlines() if l.startswith(("State", "SigBlk", "SigCgt", "SigIgn"))),
                ",".join(chans))
        except OSError as e:
            out_note = "\n[pty_drive: timed out; program gone: %s]\n" % e
    with open(log_path, "wb") as f:
        f.write(out)
        if rc == 124:
            f.write(out_note.encode())
    sys.exit(rc)


def finish_killed():
    try:
        finish(124)  # the note on where the program was is taken first
    finally:
        os.kill(pid, signal.SIGKILL)


for step in steps:
    cmd, _, arg = step.partition(" ")
    arg = arg.replace("\\n", "\n")
    if cmd == "expect":
        deadline = time.time() + 20
        want = arg.encode()
        while True:
            at = out.replace(b"\r\n", b"\n").find(want, mark)
            if at >= 0:
                mark = at + len(want)  # the next expect looks after this match
                break
            if time.time() > deadline:
                finish_killed()
            read_some(0.1)
    elif cmd == "send":
        os.write(fd, arg.encode() + b"\n")
    elif cmd == "key":
        os.write(fd, {"ctrl-d": b"\x04", "ctrl-c": b"\x03"}[arg])
    elif cmd == "sleep":
        end = time.time() + float(arg)
        while time.time() < end:
            read_some(end - time.time())
    elif cmd == "wait":
        deadline = time.time() + 20
        while time.time() < deadline:
            read_some(0.1)
            p, st = os.waitpid(pid, os.WNOHANG)
            if p:
                status = st
                break
        if status is None:
            finish_killed()
while read_some(0.05):
    pass
if status is None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    finish(124)
finish(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
