"""``python -m example_app``: one process on gevent's WSGI server (no gunicorn needed)."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from example_app import create_app  # noqa: E402

if __name__ == "__main__":
    host, _, port = os.environ.get("BIND", "127.0.0.1:8000").rpartition(":")
    print(f"serving on http://{host}:{port}/")
    WSGIServer((host, int(port)), create_app()).serve_forever()
