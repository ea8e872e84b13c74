# SPDX-License-Identifier: GPL-2.0-or-later
"""``python -m escd`` runs the daemon's command line."""

from escd.cli import main

raise SystemExit(main())
