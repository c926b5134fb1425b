"""A Modbus TCP device played by pymodbus, for the collector's end-to-end tests.

Usage: pymodbus_device.py PORT SPEC.json

SPEC is a list of fields, each {"table": "hr"|"ir"|"co"|"di", "address": N, "type": "u16"|
"i16"|"u32"|"i32"|"u64"|"i64"|"f32"|"f64"|"string"|"bool", "order": "ABCD"|"CDAB"|"BADC"|
"DCBA", "value": ...}. Values are encoded here with Python's struct, independently of the
collector and the simulator. Prints "ready" once it listens; answers any unit id.
"""

import asyncio
import json
import struct
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import StartAsyncTcpServer

FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d"}


def registers(field):
    if field["type"] == "string":
        raw = field["value"].encode().ljust(2 * field["length"], b"\0")
    else:
        raw = struct.pack(FORMATS[field["type"]], field["value"])
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    order = field.get("order", "ABCD")
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


async def main():
    port = int(sys.argv[1])
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    tables = {"hr": {}, "ir": {}, "co": {}, "di": {}}
    for field in spec:
        table = tables[field["table"]]
        if field["type"] == "bool":
            table[field["address"]] = 1 if field["value"] else 0
        else:
            for i, w in enumerate(registers(field)):
                table[field["address"] + i] = w

    def block(values):
        # pymodbus' device context adds 1 to every address asked for: the block starts at 1.
        size = max(values, default=0) + 2
        return ModbusSequentialDataBlock(1, [values.get(a, 0) for a in range(size)])

    device = ModbusDeviceContext(
        hr=block(tables["hr"]), ir=block(tables["ir"]), co=block(tables["co"]), di=block(tables["di"])
    )
    context = ModbusServerContext(devices=device, single=True)
    print("ready", flush=True)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


asyncio.run(main())
