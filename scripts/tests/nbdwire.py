"""NBD wire constants for the Python tests, read from the module's own header.

include/uapi/knbd/nbd_proto.h is the one copy of the protocol's numbers: the
module and tools/knbd-reconnect include it, and this module parses its
#defines (KNBD_NBD_X -> X here), so the tests cannot drift from them.

    from nbdwire import W
    W.CMD_READ, W.MAGIC_REQUEST, W.REP_ERR_UNSUP, ...
"""

import os
import re

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "include", "uapi", "knbd", "nbd_proto.h")


def _parse(path):
    defs = {}
    pat = re.compile(r"^#define\s+KNBD_NBD_(\w+)\s+(.+?)\s*(?:/\*.*)?$")
    with open(path) as f:
        for line in f:
            m = pat.match(line)
            if not m:
                continue
            name, expr = m.groups()
            expr = re.sub(r"\bKNBD_NBD_(\w+)", r"\1", expr)
            expr = re.sub(r"(0x[0-9a-fA-F]+|\d+)U?L{0,2}\b", r"\1", expr)
            defs[name] = eval(expr, {}, dict(defs))  # only numbers and earlier names
    return defs


class _Wire:
    def __init__(self, defs):
        self.__dict__.update(defs)


W = _Wire(_parse(HEADER))
