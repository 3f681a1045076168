"""align, fuse and merge draw a progress bar on a terminal, and nothing in a log (stderr not a terminal)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import yaml

from tests.merge.checkpoints import make_family

SRC = str(Path(__file__).resolve().parents[1] / "src")


def fusechat(*args: str, terminal: bool) -> tuple[int, str]:
    """Run the command line with stdout and stderr on a pseudo-terminal (or on pipes); return code and output."""
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fusechat", *args]
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        return done.returncode, done.stdout + done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal's 24x120 size
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 1 << 16)
        except OSError:  # EIO: the terminal's other end closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_align_and_fuse_bars(world, tmp_path):
    piv, src = str(world["stores"]["bytelevel"]), str(world["stores"]["metaspace"])
    align = ["align", "--pivot-store", piv, "--source-store", src, "--vocab-map", "prefix"]
    code, shown = fusechat(*align, "--out", str(tmp_path / "al"), terminal=True)
    assert code == 0, shown
    assert "align metaspace" in shown and "100%" in shown and " conv" in shown
    code, logged = fusechat(*align, "--out", str(tmp_path / "al2"), terminal=False)
    assert code == 0 and "100%" not in logged and "align metaspace" not in logged
    fuse = ["fuse", "--pivot-store", piv, "--aligned", str(tmp_path / "al"), "--method", "mince"]
    code, shown = fusechat(*fuse, "--out", str(tmp_path / "fu"), terminal=True)
    assert code == 0 and "fuse mince" in shown and "100%" in shown, shown


def test_merge_bar(tmp_path):
    base, a, b = make_family(tmp_path / "in", seed=3)
    config = tmp_path / "ties.yml"
    models = [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in (a, b)]
    config.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(base), "models": models}))
    code, shown = fusechat("merge", str(config), str(tmp_path / "out"), terminal=True)
    assert code == 0, shown
    assert "merge ties" in shown and "100%" in shown  # (off a terminal: the align test)
