# SPDX-License-Identifier: GPL-2.0-or-later
"""Every bus name, object path, interface and error name of the escd D-Bus API.

Pure: constants and path builders only (docs/dbus-api.md). The service, escctl and
the tests all take their names from here, so a rename happens in one place.
"""

from __future__ import annotations

import re

from escd.errors import ERROR_PREFIX, InvalidArgumentError

BUS_NAME = "io.github.escd.Escd1"

ROOT_PATH = "/io/github/escd/Escd1"
MANAGER_PATH = f"{ROOT_PATH}/Manager"
READER_PATH_PREFIX = f"{ROOT_PATH}/reader/"
TOKEN_PATH_PREFIX = f"{ROOT_PATH}/token/"
JOB_PATH_PREFIX = f"{ROOT_PATH}/job/"
NO_OBJECT = "/"

MANAGER_INTERFACE = "io.github.escd.Escd1.Manager"
READER_INTERFACE = "io.github.escd.Escd1.Reader"
TOKEN_INTERFACE = "io.github.escd.Escd1.Token"  # noqa: S105 - not a password
JOB_INTERFACE = "io.github.escd.Escd1.Job"
#: Implemented by frontends (and escctl) at a path of their choice, never by escd.
AGENT_INTERFACE = "io.github.escd.Escd1.Agent"
AGENT_ERROR_CANCELED = "io.github.escd.Escd1.Agent.Error.Canceled"
AGENT_ERROR_REJECTED = "io.github.escd.Escd1.Agent.Error.Rejected"

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
ERROR_NO_REPLY = "org.freedesktop.DBus.Error.NoReply"

ANNOTATION_EMITS_CHANGED = "org.freedesktop.DBus.Property.EmitsChangedSignal"


def reader_path(index: int) -> str:
    return f"{READER_PATH_PREFIX}{index}"


def token_path(token_id: str) -> str:
    """The object path of a token; ids are lower-case hex or ``atr_<hex>_<hex>``."""
    return f"{TOKEN_PATH_PREFIX}{token_id}"


def token_id_from_path(path: str) -> str:
    """The token id a token's object path ends in; "" for any other path."""
    return path.removeprefix(TOKEN_PATH_PREFIX) if path.startswith(TOKEN_PATH_PREFIX) else ""


_PATH_ELEMENT = re.compile(r"[A-Za-z0-9_]{1,64}")


def numbered_job_path(number: int) -> str:
    """``/job/<n>``: the path of a job whose caller passed no ``handle_token``."""
    return f"{JOB_PATH_PREFIX}{number}"


def job_path_for(sender: str, handle_token: str) -> str:
    """``/job/<sender>/<handle_token>``, predictable by the caller (xdg-desktop-portal's rule).

    ``sender`` is the caller's unique name without ``:`` and with ``.`` as ``_``;
    ``handle_token`` must be 1-64 of ``[A-Za-z0-9_]`` (``InvalidArgumentError`` otherwise).
    """
    if not _PATH_ELEMENT.fullmatch(handle_token):
        raise InvalidArgumentError("handle_token must be 1 to 64 letters, digits or underscores")
    element = sender.lstrip(":").replace(".", "_")
    if not _PATH_ELEMENT.fullmatch(element):
        raise InvalidArgumentError("the caller has no usable unique bus name")
    return f"{JOB_PATH_PREFIX}{element}/{handle_token}"
