"""The wire format, pure: encoding events, parsing event streams, multi-channel ids and
ASCII numbers. No Flask, no I/O, no gevent here."""
