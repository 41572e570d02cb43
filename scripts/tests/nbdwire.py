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


def parse_defines(path, prefix, keep=lambda p: ""):
    """{name: value} of the #defines in path whose name starts with the regex
    prefix (its match, after keep() of it, is dropped from the name); values
    are numbers or expressions of earlier names."""
    defs = {}
    pat = re.compile(r"^#define\s+(" + prefix + r")(\w+)\s+(.+?)\s*(?:/\*.*)?$")
    with open(path) as f:
        for line in f:
            m = pat.match(line)
            if not m:
                continue
            pre, name, expr = m.groups()
            name = keep(pre) + name
            expr = re.sub(r"\b(?:" + prefix + r")(\w+)", r"\1", expr)
            expr = re.sub(r"(0x[0-9a-fA-F]+|\d+)U?L{0,2}\b", r"\1", expr)
            defs[name] = eval(expr, {}, dict(defs))  # only numbers and earlier names
    return defs


def _parse(path):
    return parse_defines(path, "KNBD_NBD_")


class _Wire:
    def __init__(self, defs):
        self.__dict__.update(defs)


W = _Wire(_parse(HEADER))
