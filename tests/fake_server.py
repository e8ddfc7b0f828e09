"""A stand-in for `jupyterhub-singleuser`: a real process, started by the real local backend, that
listens where JupyterHub told it to and reports what it was given.

`make_image(dir)` writes `<dir>/bin/jupyterhub-singleuser`. The process reads its port from
JUPYTERHUB_SERVICE_URL (as jupyterhub-singleuser does) and answers GET /env (its environment,
JSON), GET /argv, GET /cgroup (/proc/self/cgroup), GET /sys-path (what `import` would search)
and GET /umask.
It starts in milliseconds, so backend tests run real processes without JupyterLab's 2 s start.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

SERVER = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

port = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"]).port
answers = {
    "/env": lambda: dict(os.environ),
    "/argv": lambda: sys.argv,
    "/cgroup": lambda: open("/proc/self/cgroup").read(),
    "/sys-path": lambda: sys.path,
    "/umask": lambda: current_umask(),
}

def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(answers[self.path]()).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def make_image(where: Path) -> Path:
    """An image env whose bin/jupyterhub-singleuser is the fake server; returns `where`."""
    (where / "bin").mkdir(parents=True, exist_ok=True)
    script = where / "bin" / "jupyterhub-singleuser"
    script.write_text(f"#!{sys.executable}\n{SERVER}")
    script.chmod(0o755)
    return where


def ask(url: str, what: str) -> Any:
    with urllib.request.urlopen(f"{url.rstrip('/')}{what}", timeout=10) as r:
        return json.loads(r.read())
