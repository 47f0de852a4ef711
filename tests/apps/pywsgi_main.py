"""Serve core_app on gevent.pywsgi (monkey-patched), the way `python -m example_app` does."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from tests.apps.core_app import create_app  # noqa: E402

WSGIServer(("127.0.0.1", int(sys.argv[1])), create_app(), log=None).serve_forever()
