# SPDX-License-Identifier: GPL-2.0-or-later
"""Every bus name, object path, interface and error name of the escd D-Bus API.

Pure: constants and path builders only (specs: D-Bus API §4.1). The service, escctl and
the tests all take their names from here, so a rename happens in one place.
"""

from __future__ import annotations

from escd.errors import ERROR_PREFIX

BUS_NAME = "io.github.escd.Escd1"

ROOT_PATH = "/io/github/escd/Escd1"
MANAGER_PATH = f"{ROOT_PATH}/Manager"
READER_PATH_PREFIX = f"{ROOT_PATH}/reader/"
TOKEN_PATH_PREFIX = f"{ROOT_PATH}/token/"
NO_OBJECT = "/"

MANAGER_INTERFACE = "io.github.escd.Escd1.Manager"
READER_INTERFACE = "io.github.escd.Escd1.Reader"
TOKEN_INTERFACE = "io.github.escd.Escd1.Token"  # noqa: S105 - not a password

OBJECT_MANAGER_INTERFACE = "org.freedesktop.DBus.ObjectManager"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
DBUS_INTERFACE = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
DBUS_NAME = "org.freedesktop.DBus"

ERROR_INTERNAL = ERROR_PREFIX + "Internal"
ERROR_NO_SUCH_TOKEN = ERROR_PREFIX + "NoSuchToken"
ERROR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ERROR_SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"
ERROR_NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"
ERROR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"

ANNOTATION_EMITS_CHANGED = "org.freedesktop.DBus.Property.EmitsChangedSignal"


def reader_path(index: int) -> str:
    return f"{READER_PATH_PREFIX}{index}"


def token_path(token_id: str) -> str:
    """The object path of a token; ids are lower-case hex or ``atr_<hex>_<hex>``."""
    return f"{TOKEN_PATH_PREFIX}{token_id}"


def token_id_from_path(path: str) -> str | None:
    if not path.startswith(TOKEN_PATH_PREFIX):
        return None
    return path[len(TOKEN_PATH_PREFIX) :] or None
