"""Wiegand-to-ASCII converters and QR / barcode scanners in serial mode; patrol checkpoints read the same way."""

from __future__ import annotations

from drivers.manifest import Manifest
from drivers.serial_reader.schema import SerialReaderConfig

MANIFEST = Manifest(
    name="serial_reader", kinds=("reader", "checkpoint"), schema=SerialReaderConfig,
    driver="drivers.serial_reader.driver:SerialReaderDriver", simulator="simulators.serial_reader",
    events=("campus.reader.card_read", "campus.reader.code_scanned", "campus.reader.keypad"))
