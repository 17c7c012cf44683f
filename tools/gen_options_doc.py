#!/usr/bin/env python3
"""Write doc/options.md from the registered options (tests check it is current).

python tools/gen_options_doc.py          # rewrite doc/options.md
python tools/gen_options_doc.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, os.pardir, "doc", "options.md")

HEADER = """# Options reference

All options live in group `[oslo_messaging_zmq]`. This page is generated from
the code by `python tools/gen_options_doc.py`. A sample config file with every
option is shipped as `etc/zmqdriver.conf.sample`; regenerate it with
`oslo-config-generator --config-file etc/oslo-config-generator/zmqdriver.conf`.

The transport URL (`[DEFAULT] transport_url`) chooses the matchmaker:
`zmq://` (embedded), `zmq+redis://[user:password@]host:port[,host2:port2][/db]`,
`zmq+etcd://[user:password@]host:port[,host2:port2][?tls=true]`.

"""


def _default(opt) -> str:
    if opt.sample_default is not None:
        return str(opt.sample_default)
    return "" if opt.default is None else str(opt.default)


def _row(opt) -> str:
    help_text = " ".join(opt.help.split()).replace("|", "\\|")
    default = f"`{_default(opt)}`" if _default(opt) else "(see meaning)"
    return f"| `{opt.name}` | {type(opt.type).__name__} | {default} | {help_text} |"


def render() -> str:
    sys.path.insert(0, os.path.join(HERE, os.pardir))
    from zmqdriver import options

    lines = [HEADER, "## Options\n", "| name | type | default | meaning |", "|---|---|---|---|"]
    lines += [_row(opt) for opt in options.zmq_opts]
    lines += [
        "",
        "## Accepted for compatibility, ignored\n",
        "Options of the old in-tree ZeroMQ driver that have no meaning here. A config",
        "file that sets them still loads; each one set is logged once as ignored. They are",
        "deprecated for removal (oslo.config warns about them too): delete them from config",
        "files.\n",
        "| name | note |",
        "|---|---|",
    ]
    lines += [f"| `{opt.name}` | {opt.help} |" for opt in options.legacy_ignored_opts]
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        with open(TARGET) as handle:
            if handle.read() != text:
                print("doc/options.md is out of date: run tools/gen_options_doc.py")
                return 1
        return 0
    with open(TARGET, "w") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
