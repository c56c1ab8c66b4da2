"""librdkafka itself, as the confluent-kafka wheel ships it: where the library is, what its
configuration API says about a property (without making a client), and where its log lines go
when a confluent-kafka client is used. A leaf: it imports nothing of eventstream."""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib
import logging
import os
from collections.abc import Callable

__all__ = ["ClientLog", "candidate_paths", "property_error"]

_CONF_OK = 0
_ERRSTR_SIZE = 512


def candidate_paths() -> list[str]:
    """Paths of the librdkafka confluent-kafka loaded, best first: the one its wheel bundles
    (``confluent_kafka.libs/librdkafka-<hash>.so.1`` on Linux), else one the dynamic linker has
    loaded (confluent-kafka built against a system librdkafka)."""
    import confluent_kafka

    importlib.import_module("confluent_kafka.cimpl")  # loads the bundled librdkafka
    package = os.path.dirname(os.path.abspath(confluent_kafka.__file__))
    libs = os.path.join(os.path.dirname(package), "confluent_kafka.libs")
    paths = sorted(glob.glob(os.path.join(libs, "librdkafka-*.so*")))
    paths += sorted(glob.glob(os.path.join(package, ".dylibs", "librdkafka*.dylib")))
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").partition("/")[2]
                name = os.path.basename(path)
                if name.startswith("librdkafka") and not name.startswith("librdkafka++"):
                    path = "/" + path
                    if path not in paths:
                        paths.append(path)
    except OSError:
        pass
    return paths


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The librdkafka confluent-kafka uses (already loaded: the same instance), or None where it
    cannot be found."""
    for path in candidate_paths():
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | os.RTLD_NOW)
        except OSError:
            continue
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_conf_new.argtypes = []
        lib.rd_kafka_conf_set.restype = ctypes.c_int
        lib.rd_kafka_conf_set.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.rd_kafka_conf_destroy.restype = None
        lib.rd_kafka_conf_destroy.argtypes = [ctypes.c_void_p]
        return lib
    return None


def property_error(name: str, value: str) -> str | None:
    """librdkafka's complaint about setting property ``name`` to ``value`` (an unknown name, a
    value of the wrong kind or out of range), or None. Makes no client and no network call; a
    combination of properties is checked when a client is made. None, too, where the library
    cannot be reached (it then checks when a client is made)."""
    lib = _library()
    if lib is None:
        return None
    conf = lib.rd_kafka_conf_new()
    errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
    try:
        result = lib.rd_kafka_conf_set(conf, name.encode(), value.encode(), errstr, _ERRSTR_SIZE)
    finally:
        lib.rd_kafka_conf_destroy(conf)
    if result == _CONF_OK:
        return None
    return errstr.value.decode("utf-8", "replace")


class ClientLog:
    """Passed as confluent-kafka's ``logger``: librdkafka's lines go to ``<logger>.librdkafka``
    at DEBUG. Broker outages would otherwise print a line per reconnect; the errors that matter
    reach the application as exceptions or through eventstream's own log records."""

    def __init__(
        self, logger: logging.Logger, on_warning: Callable[[str, str], None] | None = None
    ) -> None:
        self._logger = logger.getChild("librdkafka")
        self._on_warning = on_warning  # (facility, text) of WARNING-and-worse lines

    def log(self, level: int, msg: str, *args: object) -> None:
        self._logger.debug(msg, *args)
        # confluent-kafka calls log(level, "%s [%s] %s", facility, client name, text).
        if self._on_warning is not None and level >= logging.WARNING and len(args) == 3:
            self._on_warning(str(args[0]), str(args[2]))
